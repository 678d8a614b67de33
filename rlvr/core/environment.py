"""The Environment protocol: how a plugin environment talks to the episode loop.

One Environment instance serves one episode. The loop calls ``reset(task)`` once for the prompt,
then, each time the policy's turn ends (a stop string from ``stop_strings`` or EOS), ``step(action)``
with the text the policy produced in that turn. ``step`` answers with an observation to append
(tokenised once, ``loss_mask = 0``), whether the episode is done, and optionally a reward.
When the episode ends without a reward from ``step``, the loop asks ``score(completion, task)``,
which by default combines the verifiers named in ``verifiers`` (name → weight). Each episode's
``metrics()`` land in its trajectory's ``info``; the class method ``batch_metrics(trajectories)``
turns a rollout batch of them into the ``env/...`` numbers the learners log per step.

A turn that ends with EOS ends the episode, unless the environment's ``end_at_eos`` is False:
then ``step`` gets that turn too (its text without the EOS token) and may continue the episode
(Search-R1 answers a turn without an action with a corrective message, whatever ended it).

Settings. Every annotated class attribute is a setting (``topk: int = 3``), inherited ones
included; ``ClassVar`` attributes (``stop_strings``) are protocol, not settings. A config's
``env.settings`` are checked against them once, when the episode loop's factory is built
(:func:`rlvr.rollout.episodes.make_env_factory`, before any model loads): an unknown name fails with the
list of valid ones, a value of the wrong type with the expected type. The class method
``preflight(settings)`` then checks what the settings point at (a retrieval server answers, the
code sandbox runs), once.

A minimal environment (see ``rlvr.environments.calculator`` for a full one)::

    @rlvr.environment("echo")
    class Echo(Environment):
        stop_strings = ["</say>"]
        greeting: str = "hi"  # a setting: env.settings: {greeting: hello}
        def step(self, action):
            return StepResult(observation="", done=True)
"""

from __future__ import annotations

import collections.abc
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from rlvr.core.scoring import combine
from rlvr.core.types import Score, Task, ToolCall, Trajectory


@dataclass
class StepResult:
    """What ``Environment.step`` returns."""

    observation: str = ""  # text appended after the action, never trained
    done: bool = False  # the episode ends after this step
    reward: float | None = None  # final reward, if the environment decides it itself
    tool_call: ToolCall | None = None  # the tool call this action made, for metrics
    tool_calls: list[ToolCall] = field(default_factory=list)  # every call, in order, when the
    # action made several (parallel tool calls; ``tool_call`` is then the first)


class Environment:
    """Base class for environments. Subclasses set ``stop_strings`` and override ``step``."""

    #: Strings that end the policy's turn; the stop string stays in the output and is trained.
    stop_strings: ClassVar[list[str]] = []

    # -- settings (every annotated class attribute; see the module docstring) --------------------
    #: Verifier name → weight, combined into the final reward by :meth:`score`.
    verifiers: dict[str, float] = {}
    #: System message put before the task's text prompt (chat templates render it); None = none.
    #: A task whose prompt is already chat messages is used as is.
    system_prompt: str | None = None
    #: True: a turn that ends with EOS ends the episode. False: it goes to ``step`` like a turn
    #: that ended with a stop string, and the episode goes on unless ``step`` says it is done.
    end_at_eos: bool = True

    def __init__(self, **settings: Any) -> None:
        for key, value in self.check_settings(settings).items():
            setattr(self, key, value)
        self.task: Task | None = None

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        """Setting name → declared type (annotated class attributes, inherited ones included)."""
        return declared_settings(cls)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """``settings`` checked against the declared ones: a ValueError names an unknown setting
        (listing the valid ones) or a value of the wrong type. Integers given for float settings
        become floats. ``where`` names the source in messages (default: the class)."""
        return check_settings(cls, settings, where or f"environment {cls.__name__}")

    @classmethod
    def preflight(cls, settings: dict[str, Any]) -> None:
        """Check once, before a run starts, that what the (already type-checked) settings point
        at is usable — a server answers, a sandbox runs — and raise a ValueError that names the
        setting if not. Called by :func:`rlvr.rollout.episodes.make_env_factory`; the default checks
        nothing."""

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


# -- settings --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def declared_settings(cls: type) -> dict[str, Any]:
    """Name → type of the settings of an environment class: its annotated, non-``ClassVar``,
    public class attributes, with those of its bases."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # an annotation naming something its module cannot see
        raise TypeError(f"environment {cls.__name__}: cannot read its settings' annotations "
                        f"({type(e).__name__}: {e})") from None
    return {name: tp for name, tp in sorted(hints.items())
            if not name.startswith("_") and typing.get_origin(tp) is not ClassVar
            and tp is not ClassVar}


def check_settings(cls: type, settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """See :meth:`Environment.check_settings`."""
    declared = declared_settings(cls)
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in declared:
            valid = ", ".join(f"{n} ({type_name(t)})" for n, t in declared.items()) or "(none)"
            raise ValueError(f"{where}: unknown setting {key!r}; valid settings: {valid}")
        tp = declared[key]
        if not conforms(value, tp):
            raise ValueError(f"{where}: setting {key!r} must be {type_name(tp)}, got "
                             f"{type(value).__name__} {value!r:.100}")
        out[key] = float(value) if _is_float_type(tp) and type(value) is int else value
    return out


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as YAML or the command line give it) fits the annotation ``tp``: plain
    classes, ``X | None`` and unions, ``Literal``, and ``list`` / ``tuple`` / ``dict`` of these.
    A bool is not an int (YAML ``yes`` for a count is a mistake); an int is a float."""
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(conforms, value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            return False
        return not args or all(conforms(k, args[0]) and conforms(v, args[1])
                               for k, v in value.items())
    if origin is not None:  # another generic (Callable[...], ...): its class alone
        return isinstance(value, origin) if isinstance(origin, type) else True
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def type_name(tp: Any) -> str:
    """How a setting's type reads in a message: ``str | None``, ``dict[str, float]``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _is_float_type(tp: Any) -> bool:
    return tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                           and float in typing.get_args(tp) and int not in typing.get_args(tp))
