"""The rewards that come from models rather than verifiers (Bradley–Terry reward models), mixed in
after rollout, and the checks of a run's reward specification (:mod:`rlvr.core.reward_spec`)
against the registry and the filesystem.

PPO-RLHF (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593; Stiennon et al. 2020) trains
against ``r(x, y) - mean_ref`` where ``mean_ref`` is the reward model's mean over a reference set,
so reference responses score 0 on average. ``rlvr train rm`` stores that mean beside the weights
(``rlvr_reward_model.json``); a reward model without it is normalised by the mean over the first
batch it scores — samples of the initial policy, Ziegler et al.'s reference set — fixed from then
on. The KL to the SFT model is the learner's business (``rl.kl_coef`` with ``rl.kl_in_reward``;
the reference is the initial policy, so start from the SFT model's directory).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rlvr.core.models import pick_device
from rlvr.core.registry import ENVIRONMENTS, VERIFIERS
from rlvr.core.reward_spec import (PART_PREFIX, ModelReward, RewardSpec, parse_reward,
                                   parse_reward_spec)
from rlvr.core.types import Trajectory
from rlvr.rewards.reward_model import check_reward_model_dir, load_reward_model, score_texts

log = logging.getLogger(__name__)

def reward_spec(cfg, *, check: bool = True) -> RewardSpec:
    """The run's whole reward (:func:`rlvr.core.reward_spec.parse_reward_spec`).

    ``check``: also look up each verifier in the registry and each reward model's directory on
    disk (without loading weights), so a bad name or path fails before any model is loaded.
    """
    spec = parse_reward_spec(cfg)
    if check:
        _check_verifiers(spec.verifiers, cfg)
        for m in spec.models:
            check_reward_model_dir(m.path, m.source)
    return spec


def _check_verifiers(verifiers: dict[str, float], cfg) -> None:
    from_reward = set(parse_reward(getattr(cfg, "reward", None))[0])
    for name in verifiers:
        if name not in VERIFIERS:
            key = f"reward.{name}" if name in from_reward else f"env.verifiers.{name}"
            known = ", ".join(sorted(VERIFIERS.names())) or "(none)"
            hint = f"; a reward model entry reads {name}: {{model: PATH}}" if name in from_reward else ""
            raise ValueError(f"{key}: unknown verifier {name!r}; known: {known}{hint}")


def env_config(cfg):
    """``cfg.env`` with the verifier weights of the whole reward specification (checked). Reward
    models without any verifier: the environment's own verifiers still run, at weight 0, so
    accuracy is logged while the reward is the models' alone."""
    spec = reward_spec(cfg)
    verifiers = dict(spec.verifiers)
    if spec.models and not verifiers:
        verifiers = {name: 0.0 for name in getattr(ENVIRONMENTS.get(cfg.env.name), "verifiers", {})}
    return dataclasses.replace(cfg.env, verifiers=verifiers)


#: (path, device) → {"model", "tokenizer", "mean"}: loaded once per process, not once per step
_LOADED: dict[tuple[str, str], dict[str, Any]] = {}


def _get(m: ModelReward, device: str) -> dict[str, Any]:
    key = (m.path, device)
    if key not in _LOADED:
        check_reward_model_dir(m.path, m.source)
        model, tokenizer, meta = load_reward_model(m.path, device)
        mean = meta.get("reference_mean")
        _LOADED[key] = {"model": model, "tokenizer": tokenizer,
                        "mean": float(mean) if mean is not None else None,
                        "max_length": int(getattr(model.config, "max_position_embeddings", 1024) or 1024)}
        log.info("reward model %s (%s) loaded (reference mean %s)", m.name, m.path, mean)
    return _LOADED[key]


def add_model_rewards(trajectories: list[Trajectory], prompts: list[str], completions: list[str],
                      cfg) -> None:
    """Add each reward model's ``weight × (score − reference mean)`` to each trajectory's reward,
    keeping the normalised score in ``reward_parts["model:<name>"]``. No-op without reward models.

    ``prompts[i]`` is the rendered prompt text of ``trajectories[i]`` (chat template applied) and
    ``completions[i]`` the text after it; the reward model reads ``prompt + completion``.
    """
    models = parse_reward_spec(cfg).models
    if not models:
        return
    if not len(trajectories) == len(prompts) == len(completions):
        raise ValueError(f"add_model_rewards: {len(trajectories)} trajectories, {len(prompts)} prompts "
                         f"and {len(completions)} completions must have one length")
    if not trajectories:
        return

    device = pick_device(cfg.run.device)
    texts = [(p or "") + (c or "") for p, c in zip(prompts, completions)]
    for m in models:
        rm = _get(m, device)
        raw = score_texts(rm["model"], rm["tokenizer"], texts, max_length=rm["max_length"],
                          batch_size=max(1, cfg.optim.micro_batch_size))
        if rm["mean"] is None:
            rm["mean"] = sum(raw) / len(raw)
            log.info("reward model %s: no stored reference mean; using the first batch's, %.4f",
                     m.name, rm["mean"])
        for traj, r in zip(trajectories, raw):
            score = r - rm["mean"]
            traj.reward_parts[PART_PREFIX + m.name] = score
            traj.reward = float(traj.reward) + m.weight * score
