"""The reward specification — verifiers and reward models in one place — and the rewards that come
from models rather than verifiers (Bradley–Terry reward models), mixed in after rollout.

``reward`` (a top-level config key) maps each reward source to its weight::

    reward:
      qa_em: 1.0                                   # a verifier: name → weight
      rm: {model: runs/rm_tiny/final, weight: 0.5} # a reward model: name → {model: PATH, weight}

Shorthands: ``reward: model PATH`` (the whole reward is one reward model, weight 1),
``reward: {model: PATH, ...}`` and ``NAME: model PATH`` (a reward model of weight 1 beside other
entries). A reward model without a name is called ``rm``. The total reward of a trajectory is
``Σ_v w_v · verifier_v + Σ_m w_m · (RM_m(x, y) − mean_m)``; each part is kept unweighted in
``Trajectory.reward_parts`` (``qa_em``, ``model:rm``) and logged as ``reward/<part>``.

Older spellings still work and merge into the same specification: ``env.verifiers`` (verifier
weights; a verifier weighted in both places is an error) and ``rl.reward_model`` with
``rl.reward_model_weight`` (a reward model called ``rm``). When reward models are named but no
verifier is, the environment's own verifiers still run at weight 0, so ``reward/accuracy`` and
their parts are logged without entering the reward.

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
import math
from dataclasses import dataclass, field
from typing import Any

from rlvr.core.types import Trajectory

log = logging.getLogger(__name__)

#: Name of a reward model given without one (``reward: model PATH``, ``rl.reward_model``).
DEFAULT_MODEL_NAME = "rm"
#: Prefix of a reward model's key in ``Trajectory.reward_parts`` (logged as ``reward/model:NAME``).
PART_PREFIX = "model:"


@dataclass(frozen=True)
class ModelReward:
    """One reward model in the reward: ``weight × (score − reference mean)``."""

    name: str
    """Its part's name: ``reward_parts["model:<name>"]``."""
    path: str
    """Directory saved by ``rlvr train rm`` (``final/``)."""
    weight: float = 1.0
    """Weight of its normalised score in the total reward."""
    source: str = "reward"
    """The config key that named it, for error messages (``reward.rm.model``, ``rl.reward_model``)."""


@dataclass
class RewardSpec:
    """The whole reward of an RL run."""

    verifiers: dict[str, float] = field(default_factory=dict)
    """Verifier name → weight handed to the environment; empty = the environment's default."""
    models: list[ModelReward] = field(default_factory=list)
    """Reward models whose weighted, normalised scores are added after rollout."""


_FORMS = ("a mapping of verifier name → weight and reward models (NAME: {model: PATH, weight: W}), "
          "or 'model PATH'")


def _weight(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number (a weight), got {value!r}")
    return float(value)


def _path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: missing the path of a reward model directory (e.g. "
                         f"runs/rm_tiny/final), got {value!r}")
    return value.strip()


def _model_string(value: str, key: str) -> str | None:
    """``'model PATH'`` → PATH; any other string → None."""
    head, _, rest = value.strip().partition(" ")
    if head != "model":
        return None
    return _path(rest, f"{key} (model PATH)")


def reward_as_mapping(value: str) -> str | dict[str, str]:
    """``'model PATH'`` → ``{"model": PATH}`` (the same reward); any other string unchanged."""
    head, _, rest = value.strip().partition(" ")
    return {"model": rest.strip()} if head == "model" and rest.strip() else value


def parse_reward(value: Any, key: str = "reward") -> tuple[dict[str, float], list[ModelReward]]:
    """The ``reward`` config value → (verifier weights, reward models). Checks shapes only (no
    registry or filesystem look-ups), naming the bad key."""
    if value is None:
        return {}, []
    if isinstance(value, str):
        path = _model_string(value, key)
        if path is None:
            raise ValueError(f"{key}: expected {_FORMS}; got {value!r}")
        return {}, [ModelReward(DEFAULT_MODEL_NAME, path, 1.0, key)]
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected {_FORMS}; got {type(value).__name__}")
    verifiers: dict[str, float] = {}
    models: list[ModelReward] = []
    for name, entry in value.items():
        name = str(name)
        k = f"{key}.{name}"
        if name == "model":  # model: PATH — the unnamed reward model
            if isinstance(entry, dict):
                raise ValueError(f"{k}: give a path (model: PATH), or name the reward model "
                                 f"({key}.NAME: {{model: PATH, weight: W}})")
            models.append(ModelReward(DEFAULT_MODEL_NAME, _path(entry, k), 1.0, k))
        elif isinstance(entry, dict):
            unknown = sorted(set(map(str, entry)) - {"model", "weight"})
            if unknown:
                raise ValueError(f"{k}: unknown key {unknown[0]!r}; a reward model entry takes "
                                 f"model (its directory) and weight")
            models.append(ModelReward(name, _path(entry.get("model"), f"{k}.model"),
                                      _weight(entry.get("weight", 1.0), f"{k}.weight"), f"{k}.model"))
        elif isinstance(entry, str):
            path = _model_string(entry, k)
            if path is None:
                raise ValueError(f"{k}: expected a verifier weight, {{model: PATH, weight: W}} or "
                                 f"'model PATH'; got {entry!r}")
            models.append(ModelReward(name, path, 1.0, k))
        else:
            verifiers[name] = _weight(entry, k)
    _check_unique(models)
    return verifiers, models


def _check_unique(models: list[ModelReward]) -> None:
    seen: dict[str, str] = {}
    for m in models:
        if m.name in seen:
            raise ValueError(f"{seen[m.name]} and {m.source} both name reward model {m.name!r}; "
                             f"keep one, or give them different names")
        seen[m.name] = m.source


def reward_spec(cfg, *, check: bool = True) -> RewardSpec:
    """The run's whole reward: ``reward`` merged with ``env.verifiers`` and ``rl.reward_model``.

    ``check``: also look up each verifier in the registry and each reward model's directory on
    disk (without loading weights), so a bad name or path fails before any model is loaded.
    """
    verifiers, models = parse_reward(getattr(cfg, "reward", None))
    for name, w in (cfg.env.verifiers or {}).items():
        if name in verifiers:
            raise ValueError(f"reward.{name} and env.verifiers.{name} both weight verifier {name!r}; "
                             f"give it once (reward holds verifiers and reward models together)")
        verifiers[name] = _weight(w, f"env.verifiers.{name}")
    if cfg.rl.reward_model:
        models.append(ModelReward(DEFAULT_MODEL_NAME, _path(cfg.rl.reward_model, "rl.reward_model"),
                                  _weight(cfg.rl.reward_model_weight, "rl.reward_model_weight"),
                                  "rl.reward_model"))
        _check_unique(models)
    if check:
        _check_verifiers(verifiers, cfg)
        from rlvr.rewards.reward_model import check_reward_model_dir

        for m in models:
            check_reward_model_dir(m.path, m.source)
    return RewardSpec(verifiers, models)


def _check_verifiers(verifiers: dict[str, float], cfg) -> None:
    from rlvr.core.registry import VERIFIERS

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
        from rlvr.core.registry import ENVIRONMENTS

        verifiers = {name: 0.0 for name in getattr(ENVIRONMENTS.get(cfg.env.name), "verifiers", {})}
    return dataclasses.replace(cfg.env, verifiers=verifiers)


#: (path, device) → {"model", "tokenizer", "mean"}: loaded once per process, not once per step
_LOADED: dict[tuple[str, str], dict[str, Any]] = {}


def _get(m: ModelReward, device: str) -> dict[str, Any]:
    key = (m.path, device)
    if key not in _LOADED:
        from rlvr.rewards.reward_model import check_reward_model_dir, load_reward_model

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
    models = reward_spec(cfg, check=False).models
    if not models:
        return
    if not len(trajectories) == len(prompts) == len(completions):
        raise ValueError(f"add_model_rewards: {len(trajectories)} trajectories, {len(prompts)} prompts "
                         f"and {len(completions)} completions must have one length")
    if not trajectories:
        return
    from rlvr.core.models import pick_device
    from rlvr.rewards.reward_model import score_texts

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
