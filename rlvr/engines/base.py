"""The Engine protocol: token ids in, token ids and per-token logprobs out.

Engines never decode sampled tokens to re-encode them. ``logprobs[i]`` is the log-probability of
the sampled token under the distribution it was sampled from, ``log_softmax(logits / temperature)``
(before top-p truncation, as the learner recomputes it); with ``temperature == 0`` (greedy) it is
the plain ``log_softmax(logits)``. A multi-turn caller opens a session (:func:`open_session`),
which lets an engine keep each episode's state, such as its KV cache, from one turn to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Protocol, runtime_checkable


@dataclass
class SamplingParams:
    """How to sample one turn."""

    max_new_tokens: int = 64  # tokens per call, per sequence
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)  # stop right after any of these; kept in output
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Completion:
    """One generated continuation."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (a stop string), "eos" or "length"
    stop_string: str | None = None


@runtime_checkable
class Engine(Protocol):
    """What the rollout loop needs of an inference engine."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def load_weights(self, model_or_state_dict) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class EngineSession(Protocol):
    """Multi-turn generation: ``keys`` name the episodes, one per prompt. An engine that can keep
    an episode's state between turns (``HFEngine.session``: its KV cache) continues from it; the
    completions are those ``Engine.generate`` gives on the same prompts."""

    def generate(self, keys: list[Hashable], prompts: list[list[int]], params: SamplingParams
                 ) -> list[Completion]: ...

    def close(self) -> None: ...


class StatelessSession:
    """The session of an engine that keeps nothing between calls: every turn is a fresh call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def generate(self, keys: list[Hashable], prompts: list[list[int]], params: SamplingParams
                 ) -> list[Completion]:
        return self.engine.generate(prompts, params)

    def close(self) -> None:
        pass


def open_session(engine: Engine) -> EngineSession:
    """The engine's own session (``engine.session()``) where it has one, else a stateless one."""
    make = getattr(engine, "session", None)
    return make() if callable(make) else StatelessSession(engine)
