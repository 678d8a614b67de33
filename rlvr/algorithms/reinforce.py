"""REINFORCE with a baseline (Williams 1992), the simplest policy gradient.

``A_i = r_i - b`` broadcast over trained tokens, with ``b`` the batch mean (``rl.baseline =
batch-mean``) or an exponential moving average of past batches' mean reward (``moving-average``,
decay ``rl.baseline_decay``, checkpointed); one unclipped step of ``-A log pi`` per batch. The
moving average is updated after the advantages, so a batch's baseline never holds its own rewards.
"""

import rlvr
from rlvr.algorithms.advantages import moving_average_baseline, reinforce_advantages
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.rloo import policy_gradient


def baseline_advantages(x, rl):
    mean = float(x.rewards.mean())
    if rl.baseline == "batch-mean":
        x.outputs["baseline"] = mean
        return reinforce_advantages(x.rewards)  # (B,)
    previous = x.state.get("baseline")
    b = mean if previous is None else previous  # the first batch starts it at its own mean
    x.outputs["baseline"] = b
    x.state["baseline"] = moving_average_baseline(previous, mean, rl.baseline_decay)
    return reinforce_advantages(x.rewards, b)  # (B,)


REINFORCE = rlvr.algorithm("reinforce")(OnPolicyAlgorithm(
    name="reinforce", summary="REINFORCE: batch-mean or moving-average baseline, one unclipped step per batch",
    advantages=baseline_advantages, policy_loss=policy_gradient, clipped=False, needs_groups=False,
    settings=frozenset({"baseline", "baseline_decay"})))
