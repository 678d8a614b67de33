"""Rewards that come from models rather than verifiers (a Bradley–Terry reward model), mixed into
the verifiers' reward after rollout."""

from __future__ import annotations

from rlvr.types import Trajectory


def add_model_rewards(trajectories: list[Trajectory], prompts: list[str], completions: list[str],
                      cfg) -> None:
    """Add ``cfg.rl.reward_model_weight`` × the reward model's normalised score to each trajectory's
    reward (and to ``reward_parts["reward_model"]``). No-op when ``cfg.rl.reward_model`` is unset."""
    if not cfg.rl.reward_model:
        return
    raise NotImplementedError("reward models as rewards are not available in this build")
