"""Rewards that come from models rather than verifiers (a Bradley–Terry reward model), mixed into
the verifiers' reward after rollout.

PPO-RLHF (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593; Stiennon et al. 2020) trains
against ``r(x, y) - mean_ref`` where ``mean_ref`` is the reward model's mean over a reference set,
so reference responses score 0 on average. ``rlvr train rm`` stores that mean beside the weights
(``rlvr_reward_model.json``); a reward model without it is normalised by the mean over the first
batch it scores — samples of the initial policy, Ziegler et al.'s reference set — fixed from then
on. The KL to the SFT model is the learner's business (``rl.kl_coef`` with ``rl.kl_in_reward``).
"""

from __future__ import annotations

import logging
from typing import Any

from rlvr.types import Trajectory

log = logging.getLogger(__name__)

#: (path, device) → {"model", "tokenizer", "mean"}: loaded once per process, not once per step
_LOADED: dict[tuple[str, str], dict[str, Any]] = {}


def _get(path: str, device: str) -> dict[str, Any]:
    key = (path, device)
    if key not in _LOADED:
        from rlvr.reward_model import load_reward_model

        model, tokenizer, meta = load_reward_model(path, device)
        mean = meta.get("reference_mean")
        _LOADED[key] = {"model": model, "tokenizer": tokenizer,
                        "mean": float(mean) if mean is not None else None,
                        "max_length": int(getattr(model.config, "max_position_embeddings", 1024) or 1024)}
        log.info("reward model %s loaded (reference mean %s)", path, mean)
    return _LOADED[key]


def add_model_rewards(trajectories: list[Trajectory], prompts: list[str], completions: list[str],
                      cfg) -> None:
    """Add ``cfg.rl.reward_model_weight`` × the reward model's normalised score to each trajectory's
    reward (and to ``reward_parts["reward_model"]``). No-op when ``cfg.rl.reward_model`` is unset.

    ``prompts[i]`` is the rendered prompt text of ``trajectories[i]`` (chat template applied) and
    ``completions[i]`` the text after it; the reward model reads ``prompt + completion``.
    """
    if not cfg.rl.reward_model:
        return
    if not len(trajectories) == len(prompts) == len(completions):
        raise ValueError(f"add_model_rewards: {len(trajectories)} trajectories, {len(prompts)} prompts "
                         f"and {len(completions)} completions must have one length")
    if not trajectories:
        return
    from rlvr.models import pick_device
    from rlvr.reward_model import score_texts

    rm = _get(str(cfg.rl.reward_model), pick_device(cfg.run.device))
    texts = [(p or "") + (c or "") for p, c in zip(prompts, completions)]
    raw = score_texts(rm["model"], rm["tokenizer"], texts, max_length=rm["max_length"],
                      batch_size=max(1, cfg.optim.micro_batch_size))
    if rm["mean"] is None:
        rm["mean"] = sum(raw) / len(raw)
        log.info("reward model %s: no stored reference mean; using the first batch's, %.4f",
                 cfg.rl.reward_model, rm["mean"])
    w = cfg.rl.reward_model_weight
    for traj, r in zip(trajectories, raw):
        score = r - rm["mean"]
        traj.reward_parts["reward_model"] = score
        traj.reward = float(traj.reward) + w * score

