"""DAPO as a recipe (Yu et al. 2025, https://arxiv.org/abs/2503.14476): GRPO's advantages and
clipped surrogate with the paper's four changes, each a shared rl.* setting the recipe turns on:

- clip-higher: ``rl.clip_high`` 0.28 against ``rl.clip_low`` 0.2 (eq. 10);
- dynamic sampling: groups whose rewards are all equal are dropped (``rl.filter_zero_variance``,
  always on) and new prompts are sampled until the batch holds ``rl.prompts_per_step`` groups
  with signal, at most ``rl.resample_max_attempts`` extra batches (default 3; logged as
  ``train/sampling_attempts``);
- token-level loss: ``rl.loss_agg`` token-mean, always;
- overlong reward shaping: ``rl.overlong_buffer_len`` / ``rl.overlong_penalty``
  (:func:`rlvr.algorithms.advantages.overlong_penalty`, eq. 13; off unless a buffer is set).
The paper also drops the KL term: the bundled config keeps ``rl.kl_coef`` at 0.
"""

import rlvr
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.grpo import clipped_loss, group_advantages

DAPO = rlvr.algorithm("dapo")(OnPolicyAlgorithm(
    name="dapo", summary="DAPO: GRPO with clip-higher, dynamic sampling, token-mean loss, overlong shaping",
    advantages=group_advantages, policy_loss=clipped_loss,
    settings=frozenset({"clip_low", "clip_high", "std_normalize"}),
    defaults={"clip_high": 0.28, "resample_max_attempts": 3},
    fixed={"filter_zero_variance": True, "loss_agg": "token-mean"}))
