"""The reward specification — verifiers and reward models in one place — parsed and merged from a
run's config (shapes only: no registry or filesystem look-ups; :mod:`rlvr.rewards.spec` checks
names and paths and computes the reward-model rewards).

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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


def parse_reward_spec(cfg) -> RewardSpec:
    """The run's whole reward: ``reward`` merged with ``env.verifiers`` and ``rl.reward_model``
    (shapes and duplicates checked, naming the key)."""
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
    return RewardSpec(verifiers, models)
