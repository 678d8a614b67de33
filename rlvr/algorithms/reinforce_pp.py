"""REINFORCE++ (Hu et al. 2025, https://arxiv.org/abs/2501.03262): no critic and no group baseline.

Per-token rewards (the outcome on the last trained token, ``-β KL_t`` on each when
``rl.kl_in_reward``, as the paper and the bundled config set), their return to go, normalised
over the whole batch (:func:`rlvr.algorithms.advantages.reinforce_pp_advantages`), on PPO's clipped
surrogate. One sample per prompt is enough (``needs_groups`` is off).
"""

import rlvr
from rlvr.algorithms.advantages import reinforce_pp_advantages
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.grpo import clipped_loss


def batch_normalised_returns(x, rl):
    return reinforce_pp_advantages(x.token_rewards, x.loss_mask, rl.gamma)  # (B, T)


REINFORCE_PP = rlvr.algorithm("reinforce_pp")(OnPolicyAlgorithm(
    name="reinforce_pp", summary="REINFORCE++: KL in the per-token reward, batch-normalised returns, clipped",
    advantages=batch_normalised_returns, policy_loss=clipped_loss, needs_groups=False,
    settings=frozenset({"clip_low", "clip_high", "gamma"})))
