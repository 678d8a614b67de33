"""GRPO: group-relative policy optimisation (Shao et al. 2024, https://arxiv.org/abs/2402.03300).

Advantages ``(r - mean) / (std + eps)`` over each prompt's G samples, broadcast over the
trajectory's trained tokens; the PPO clipped surrogate (with clip-higher when
``rl.clip_high > rl.clip_low``). Settings where published implementations disagree:
``rl.std_normalize`` unbiased (G-1, TRL) | biased (G) | none (Dr. GRPO); ``rl.loss_agg``
token-mean (DAPO, verl) | seq-mean-token-mean (the paper) | seq-mean-token-sum-norm (Dr. GRPO);
the KL is a β-weighted k3 loss term (the paper) unless ``rl.kl_in_reward``.
Deviation: π_old is the engine's behaviour logprob unless ``rl.old_logprobs = recompute``.
"""

import rlvr
from rlvr.algorithms.advantages import grpo_advantages
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.losses import clipped_policy_loss


def group_advantages(x, rl):
    return grpo_advantages(x.rewards, x.group_size, rl.std_normalize)  # (B,)


def clipped_loss(lp, mb, rl):
    return clipped_policy_loss(lp, mb.old_logprobs, mb.advantages, rl.clip_low, rl.clip_high)


GRPO = rlvr.algorithm("grpo")(OnPolicyAlgorithm(
    name="grpo", summary="GRPO: group-relative advantages, clipped surrogate, optional KL to a reference",
    advantages=group_advantages, policy_loss=clipped_loss,
    settings=frozenset({"clip_low", "clip_high", "std_normalize"})))
