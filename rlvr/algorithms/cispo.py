"""CISPO: clipped importance-sampling policy optimisation (MiniMax-M1, https://arxiv.org/abs/2506.13585).

GRPO's group advantages on a REINFORCE-style loss weighted by a clipped, detached importance
ratio (:func:`rlvr.algorithms.losses.cispo_policy_loss`): every token keeps its gradient, the weight is
bounded. The paper bounds only the high side: ``rl.clip_low`` defaults to 1 (no lower bound) and
``rl.clip_high`` to 0.28 when left at PPO's 0.2; token-mean aggregation as in the paper.
"""

import rlvr
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.grpo import group_advantages
from rlvr.algorithms.losses import cispo_policy_loss


def cispo_loss(lp, mb, rl):
    return cispo_policy_loss(lp, mb.old_logprobs, mb.advantages, rl.clip_low, rl.clip_high)


CISPO = rlvr.algorithm("cispo")(OnPolicyAlgorithm(
    name="cispo", summary="CISPO: group advantages, REINFORCE loss with a clipped detached IS weight",
    advantages=group_advantages, policy_loss=cispo_loss,
    settings=frozenset({"clip_low", "clip_high", "std_normalize"}),
    defaults={"clip_low": 1.0, "clip_high": 0.28}))
