"""GSPO: group sequence policy optimisation (Zheng et al. 2025, https://arxiv.org/abs/2507.18071).

GRPO's group advantages with a *sequence-level*, length-normalised importance ratio clipped as a
whole (:func:`rlvr.algorithms.losses.gspo_policy_loss`), so the update weighs whole responses as the reward
does. The paper's clip range is tiny (3e-4 / 4e-4, the defaults here when ``rl.clip_low`` /
``rl.clip_high`` are left at PPO's 0.2) and its objective averages over sequences, so the
aggregation is always ``seq-mean-token-mean``.
"""

import rlvr
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.grpo import group_advantages
from rlvr.algorithms.losses import gspo_policy_loss


def gspo_loss(lp, mb, rl):
    return gspo_policy_loss(lp, mb.old_logprobs, mb.advantages, mb.loss_mask, rl.clip_low, rl.clip_high)


GSPO = rlvr.algorithm("gspo")(OnPolicyAlgorithm(
    name="gspo", summary="GSPO: group advantages, sequence-level length-normalised clipped ratio",
    advantages=group_advantages, policy_loss=gspo_loss,
    settings=frozenset({"clip_low", "clip_high", "std_normalize"}),
    defaults={"clip_low": 3e-4, "clip_high": 4e-4},
    fixed={"loss_agg": "seq-mean-token-mean"}))
