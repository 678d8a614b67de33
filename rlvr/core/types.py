"""The rlvr data model. This docstring is the glossary.

Task
    One dataset row made ready for an environment: ``prompt`` (text, or chat messages as a list of
    ``{"role", "content"}`` dicts), the reference ``answer`` a verifier checks against, free-form
    ``info`` for verifiers and environments, and an ``id`` unique across datasets
    (``"<dataset>:<row>"``).
Trajectory
    One episode, token-exact. ``token_ids`` is the whole sequence (prompt, then every sampled and
    every observation token in order); ``loss_mask[i] == 1`` exactly when token ``i`` was sampled by
    the policy; ``logprobs[i]`` is the behaviour policy's log-probability of a sampled token (0.0 for
    prompt and observation tokens). The three lists always have one length. ``prompt_len`` tokens
    come first and are never trained. ``group_id`` is shared by the ``samples_per_prompt`` samples
    of one prompt instance and by no other trajectory.
Score
    What a verifier says of one completion: ``reward`` (float), ``correct`` (bool, or None when the
    notion does not apply), ``parts`` (named sub-rewards for logging) and a human ``reason``.
Turn / ToolCall
    Records of what happened in an episode, for metrics and debugging. Token spans are
    ``[start, end)`` indices into ``token_ids``.

Masks are written in one place: :meth:`Trajectory.append_sampled` and
:meth:`Trajectory.append_observation`. Nothing reconstructs them from text afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Why an episode ended. ``done``: the environment said so (e.g. an ``<answer>``); ``eos``: the
#: model emitted end-of-sequence; ``max_turns`` / ``max_total_tokens`` / ``max_new_tokens``:
#: a budget ran out (the trajectory is truncated); ``error``: the environment or engine failed.
FINISH_REASONS = ("done", "eos", "max_turns", "max_total_tokens", "max_new_tokens", "error")


@dataclass
class Task:
    """A prompt, its reference answer and extra info; ``id`` unique across datasets."""

    prompt: str | list[dict[str, str]]
    answer: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str):
            if not self.prompt.strip():
                raise ValueError(f"task {self.id or '<no id>'}: the prompt is empty")
        elif isinstance(self.prompt, list):
            if not self.prompt:
                raise ValueError(f"task {self.id or '<no id>'}: the prompt has no messages")
            for i, m in enumerate(self.prompt):
                if not isinstance(m, dict) or "role" not in m or "content" not in m:
                    raise ValueError(
                        f"task {self.id or '<no id>'}: message {i} must be a dict with 'role' and "
                        f"'content', got {m!r:.80}"
                    )
        else:
            raise TypeError(
                f"task {self.id or '<no id>'}: prompt must be text or a list of messages, "
                f"got {type(self.prompt).__name__}"
            )


@dataclass(frozen=True)
class Score:
    """A verifier's verdict: ``reward``, ``correct``, named ``parts`` and a ``reason``."""

    reward: float
    correct: bool | None = None
    parts: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.reward, "correct": self.correct, "parts": dict(self.parts),
                "reason": self.reason}


@dataclass
class ToolCall:
    """One tool call: its ``name``, the raw ``query`` / argument text, and whether it was valid."""

    name: str
    query: str
    valid: bool = True
    error: str | None = None


@dataclass
class Turn:
    """One model turn: the sampled span ``[start, end)`` and the observation span that followed."""

    action_start: int
    action_end: int
    observation_end: int
    stop_reason: str  # "stop" (a stop string), "eos" or "length"


@dataclass
class Trajectory:
    """One token-exact episode. See the module docstring for every field's meaning."""

    token_ids: list[int]  # (T,) prompt + sampled + observation tokens
    loss_mask: list[int]  # (T,) 1 = sampled by the policy
    logprobs: list[float]  # (T,) behaviour logprob of sampled tokens, 0.0 elsewhere
    prompt_len: int
    group_id: str = ""
    task_id: str = ""
    reward: float = 0.0
    reward_parts: dict[str, float] = field(default_factory=dict)
    correct: bool | None = None
    turns: list[Turn] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = ""
    truncated: bool = False
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def from_prompt(cls, prompt_ids: list[int], *, group_id: str = "", task_id: str = "") -> "Trajectory":
        ids = list(prompt_ids)
        return cls(ids, [0] * len(ids), [0.0] * len(ids), len(ids), group_id=group_id, task_id=task_id)

    def check(self) -> None:
        n = len(self.token_ids)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"trajectory {self.task_id}: token_ids ({n}), loss_mask ({len(self.loss_mask)}) and "
                f"logprobs ({len(self.logprobs)}) must have one length"
            )
        if not 0 <= self.prompt_len <= n:
            raise ValueError(f"trajectory {self.task_id}: prompt_len {self.prompt_len} outside [0, {n}]")
        if any(self.loss_mask[: self.prompt_len]):
            raise ValueError(f"trajectory {self.task_id}: prompt tokens must have loss_mask 0")
        if self.finish_reason and self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason {self.finish_reason!r} not one of {FINISH_REASONS}")

    # -- the one place masks are written -------------------------------------------------------
    def append_sampled(self, ids: list[int], logprobs: list[float]) -> None:
        """Append tokens the policy sampled (trained: ``loss_mask = 1``)."""
        if len(ids) != len(logprobs):
            raise ValueError(f"{len(ids)} sampled tokens but {len(logprobs)} logprobs")
        self.token_ids.extend(ids)
        self.loss_mask.extend([1] * len(ids))
        self.logprobs.extend(float(x) for x in logprobs)

    def append_observation(self, ids: list[int]) -> None:
        """Append environment tokens (tool results, feedback: never trained, ``loss_mask = 0``)."""
        self.token_ids.extend(ids)
        self.loss_mask.extend([0] * len(ids))
        self.logprobs.extend([0.0] * len(ids))

    # -- views ---------------------------------------------------------------------------------
    @property
    def completion_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len:]

    @property
    def num_sampled(self) -> int:
        return sum(self.loss_mask)

    def __len__(self) -> int:
        return len(self.token_ids)
