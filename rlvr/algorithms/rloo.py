"""RLOO: REINFORCE leave-one-out (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740).

``A_i = r_i - mean of the other K-1 rewards of its prompt``, broadcast over trained tokens, on the
unclipped policy gradient ``-A log pi``: one optimizer step per rollout batch. With
``rl.kl_in_reward`` the sequence reward is ``r - β Σ_t KL_t`` (the paper's form).
"""

import rlvr
from rlvr.algorithms.advantages import rloo_advantages
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.losses import reinforce_policy_loss


def leave_one_out(x, rl):
    return rloo_advantages(x.rewards, x.group_size)  # (B,)


def policy_gradient(lp, mb, rl):
    return reinforce_policy_loss(lp, mb.advantages), lp.new_zeros(lp.shape, dtype=bool)


RLOO = rlvr.algorithm("rloo")(OnPolicyAlgorithm(
    name="rloo", summary="RLOO: leave-one-out baseline, one unclipped policy-gradient step per batch",
    advantages=leave_one_out, policy_loss=policy_gradient, clipped=False))
