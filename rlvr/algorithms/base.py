"""What an on-policy algorithm is: a declaration the one loop (:mod:`rlvr.learners.onpolicy`) reads.

An algorithm supplies its advantage function and its policy-loss function (thin adapters over the
pure functions of :mod:`rlvr.algorithms.advantages` and :mod:`rlvr.algorithms.losses`), says whether it needs a critic
and several samples per prompt, whether its loss is clipped (an unclipped policy gradient is valid
for one update per batch only), and which ``rl.*`` settings it reads beyond the ones the loop
honours for every algorithm (:data:`SHARED`). ``defaults`` replace settings the config leaves at
their global default (GSPO's tiny clip range); ``fixed`` are structural choices it always makes
(GSPO's per-sequence aggregation). A changed setting that neither the loop nor the algorithm
reads is refused with a message naming it, so nothing is silently ignored.

Registration is one line: ``rlvr.algorithm("name")(OnPolicyAlgorithm(...))``; the loop runs it
(``rlvr.learners.dispatch.learner_for(name)`` gives the entry point ``learner(cfg, **kw)`` of any
registered algorithm, on-policy or offline).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from rlvr.core.config import RLConfig, TrainConfig
from rlvr.core.registry import ALGORITHMS

if TYPE_CHECKING:  # a type only: the learners import the algorithms, not the other way round
    from rlvr.learners.batch import Batch

#: ``rl.*`` settings the loop honours the same way for every algorithm.
SHARED = frozenset({
    "prompts_per_step", "epochs_per_batch", "mini_batches_per_epoch", "loss_agg", "loss_max_len",
    "kl_coef", "kl_estimator", "kl_in_reward", "kl_target", "kl_horizon", "entropy_coef",
    "filter_zero_variance", "resample_max_attempts", "mask_observations", "reward_model",
    "reward_model_weight", "no_eos_penalty", "overlong_buffer_len", "overlong_penalty",
    "old_logprobs", "is_correction", "is_cap", "is_level", "share_prompts",
})


@dataclass
class AdvantageInputs:
    """What an advantage function may read, for one rollout batch of B trajectories in groups of
    ``group_size`` consecutive rows (the loop orders them by ``group_id``)."""

    rewards: torch.Tensor  # (B,) outcome reward after shaping, minus beta * sum_t KL_t when in reward
    token_rewards: torch.Tensor  # (B, T) outcome on the last trained token, -beta KL_t on each
    loss_mask: torch.Tensor  # (B, T) the training mask
    group_size: int  # G = rollout.samples_per_prompt
    values: torch.Tensor | None = None  # (B, T) the critic's values before the update
    state: dict[str, Any] = field(default_factory=dict)  # checkpointed algorithm state
    outputs: dict[str, Any] = field(default_factory=dict)  # this batch's extras: critic targets,
    # and scalars logged as train/<key>


#: (inputs, rl settings) -> advantages, (B,) per trajectory or (B, T) per token
AdvantageFn = Callable[[AdvantageInputs, RLConfig], torch.Tensor]
#: (trainer logprobs (B, T) with grad, micro-batch, rl settings) -> (per-token loss, clipped mask)
PolicyLossFn = Callable[[torch.Tensor, "Batch", RLConfig], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class OnPolicyAlgorithm:
    """One on-policy algorithm. See the module docstring."""

    name: str
    summary: str  # one line for ``rlvr list``
    advantages: AdvantageFn
    policy_loss: PolicyLossFn
    clipped: bool = True  # False: one optimizer step per batch; epochs / mini-batches > 1 refused
    needs_critic: bool = False
    needs_groups: bool = True  # rollout.samples_per_prompt >= 2
    settings: frozenset[str] = frozenset()  # rl.* keys it reads beyond SHARED
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "__doc__", self.summary)  # ``rlvr list`` shows the summary

    def check_settings(self, cfg: TrainConfig) -> None:
        """Refuse, naming the key, a setting this algorithm cannot honour (``TrainConfig.validate``
        calls it through the registry, before any model loads)."""
        resolve_settings(self, cfg)


def _readers(key: str) -> list[str]:
    return sorted(n for n, a in ALGORITHMS.items() if isinstance(a, OnPolicyAlgorithm)
                  and (key in a.settings or key in a.fixed or key in a.defaults))


def resolve_settings(algo: OnPolicyAlgorithm, cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """The config this algorithm runs with (a copy), and notes on what it set. Refuses, naming the
    key, a changed setting the algorithm cannot honour or one that contradicts another."""
    cfg = copy.deepcopy(cfg)
    rl, base, notes = cfg.rl, RLConfig(), []
    for f in dataclasses.fields(RLConfig):
        k, v, d = f.name, getattr(rl, f.name), getattr(base, f.name)
        if k in algo.fixed:
            if v != d and v != algo.fixed[k]:
                raise ValueError(f"rl.{k} = {v!r}: {algo.name} always uses {algo.fixed[k]!r}")
            if v != algo.fixed[k]:
                notes.append(f"rl.{k} = {algo.fixed[k]!r} ({algo.name})")
            setattr(rl, k, algo.fixed[k])
        elif k in algo.defaults and v == d:
            setattr(rl, k, algo.defaults[k])
            notes.append(f"rl.{k} = {algo.defaults[k]!r} ({algo.name}'s default)")
        elif v != d and k not in SHARED and k not in algo.settings:
            users = _readers(k)
            raise ValueError(f"rl.{k} = {v!r} does not apply to {algo.name}; it is a setting of "
                             f"{', '.join(users) or 'no on-policy algorithm'}")
    G = cfg.rollout.samples_per_prompt
    if algo.needs_groups and G < 2:
        raise ValueError(f"{algo.name} needs rollout.samples_per_prompt >= 2 to form a group "
                         f"baseline, got {G}")
    if not algo.clipped and (rl.epochs_per_batch > 1 or rl.mini_batches_per_epoch > 1):
        raise ValueError(f"rl.epochs_per_batch = {rl.epochs_per_batch}, rl.mini_batches_per_epoch = "
                         f"{rl.mini_batches_per_epoch}: {algo.name}'s unclipped policy gradient is "
                         f"valid for one update per batch only (use a clipped algorithm such as "
                         f"grpo or ppo for several)")
    if rl.kl_in_reward and rl.kl_coef <= 0:
        raise ValueError("rl.kl_in_reward = true needs rl.kl_coef > 0 (there is no KL to put in "
                         "the reward)")
    if rl.kl_target and rl.kl_coef <= 0:
        raise ValueError("rl.kl_target (adaptive KL) needs a starting rl.kl_coef > 0")
    if rl.filter_zero_variance and G < 2:
        raise ValueError("rl.filter_zero_variance needs rollout.samples_per_prompt >= 2 (with one "
                         "sample every group has zero variance)")
    if rl.resample_max_attempts and not rl.filter_zero_variance:
        raise ValueError("rl.resample_max_attempts re-samples groups dropped by "
                         "rl.filter_zero_variance; set that too")
    if rl.is_correction != "none" and rl.old_logprobs != "recompute":
        raise ValueError(f"rl.is_correction = {rl.is_correction!r} weighs the trainer's old "
                         f"logprobs against the engine's; it needs rl.old_logprobs = recompute")
    if rl.overlong_buffer_len >= cfg.rollout.max_new_tokens * cfg.rollout.max_turns:
        raise ValueError(f"rl.overlong_buffer_len = {rl.overlong_buffer_len} must be below the "
                         f"sampled-token budget rollout.max_new_tokens × rollout.max_turns = "
                         f"{cfg.rollout.max_new_tokens * cfg.rollout.max_turns}")
    return cfg, notes
