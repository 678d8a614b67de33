"""The Environment protocol: how a plugin environment talks to the episode loop.

One Environment instance serves one episode. The loop calls ``reset(task)`` once for the prompt,
then, each time the policy's turn ends (a stop string from ``stop_strings`` or EOS), ``step(action)``
with the text the policy produced in that turn. ``step`` answers with an observation to append
(tokenised once, ``loss_mask = 0``), whether the episode is done, and optionally a reward.
When the episode ends without a reward from ``step``, the loop asks ``score(completion, task)``,
which by default combines the verifiers named in ``verifiers`` (name → weight). Each episode's
``metrics()`` land in its trajectory's ``info``; the class method ``batch_metrics(trajectories)``
turns a rollout batch of them into the ``env/...`` numbers the learners log per step.

A minimal environment (see ``rlvr.environments.calculator`` for a full one)::

    @rlvr.environment("echo")
    class Echo(Environment):
        stop_strings = ["</say>"]
        def step(self, action):
            return StepResult(observation="", done=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlvr.types import Score, Task, ToolCall, Trajectory


@dataclass
class StepResult:
    """What ``Environment.step`` returns."""

    observation: str = ""  # text appended after the action, never trained
    done: bool = False  # the episode ends after this step
    reward: float | None = None  # final reward, if the environment decides it itself
    tool_call: ToolCall | None = None  # the tool call this action made, for metrics
    info: dict[str, Any] = field(default_factory=dict)


class Environment:
    """Base class for environments. Subclasses set ``stop_strings`` and override ``step``."""

    #: Strings that end the policy's turn; the stop string stays in the output and is trained.
    stop_strings: list[str] = []
    #: Verifier name → weight, combined into the final reward by :meth:`score`.
    verifiers: dict[str, float] = {}
    #: Optional system prompt prepended when the task prompt is plain text.
    system_prompt: str | None = None

    def __init__(self, **settings: Any) -> None:
        for key, value in settings.items():
            if not hasattr(self, key):
                raise TypeError(f"{type(self).__name__} has no setting {key!r}")
            setattr(self, key, value)
        self.task: Task | None = None

    def reset(self, task: Task) -> str | list[dict[str, str]]:
        """Start an episode; return the prompt (text or chat messages)."""
        self.task = task
        if isinstance(task.prompt, str) and self.system_prompt:
            return [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": task.prompt}]
        return task.prompt

    @classmethod
    def reset_batch(cls, envs: list["Environment"], tasks: list[Task]) -> list:
        """Start several episodes together: one prompt per (environment, task), in order, or the
        exception that episode's reset raised. Override to batch what each reset needs (one
        retrieval request for all questions of a batch); the default resets each episode in turn.
        An override that raises makes the loop reset each episode on its own, so a bad task fails
        only its episode."""
        prompts: list = []
        for env, task in zip(envs, tasks):
            try:
                prompts.append(env.reset(task))
            except Exception as e:
                prompts.append(e)
        return prompts

    def step(self, action: str) -> StepResult:
        """React to one turn of policy text. Default: single-turn, done after the first action."""
        return StepResult(done=True)

    @classmethod
    def step_batch(cls, envs: list["Environment"], actions: list[str]) -> list[StepResult]:
        """Step several episodes whose turns ended together. Override to batch tool calls (one
        retrieval request for all queries of a turn); the default steps each episode in turn."""
        return [env.step(action) for env, action in zip(envs, actions)]

    def score(self, completion: str, task: Task) -> Score:
        """Final reward of an episode from the named verifiers (weighted sum of their rewards)."""
        from rlvr.scoring import combine

        return combine(self.verifiers, completion, task.answer, **task.info)

    def metrics(self) -> dict[str, float]:
        """Per-episode numbers for logging (e.g. searches, invalid actions); the episode loop
        copies them into the trajectory's ``info``."""
        return {}

    @classmethod
    def batch_metrics(cls, trajectories: list[Trajectory]) -> dict[str, float]:
        """Numbers of one rollout batch of this environment (e.g. searches per trajectory, share
        of valid actions), usually aggregated from the trajectories' ``info``. The on-policy
        learners log them with each step under ``env/`` (the prefix is added where missing)."""
        return {}
