"""BFCL v4 ``multi_turn_base`` as an episode: the ``bfcl_multi_turn`` environment.

    env:       the chat template with the test's function docs as tools, and its first user turn
    assistant: <tool_call>{"name": "cd", "arguments": {"folder": "document"}}</tool_call><|im_end|>
    env:       role "tool" message with the call's result text           (loss_mask = 0)
    assistant: Done.<|im_end|>            ← a turn without calls: the user's turn is answered
    env:       role "user" message: the test's next user turn            (loss_mask = 0)
    ...        until the last user turn is answered without calls

A task carries its BFCL test in ``info["entry"]`` (:func:`tasks_from_entries` builds them from
:func:`rlvr.environments.bfcl_executor.load_entries`). ``reset`` sets up a :class:`rlvr.environments.bfcl_executor.World`
from the test's ``initial_config`` and shows every function doc of its involved classes as a tool
backed by ``World.call``: calls act on the world's API instances and their result text (errors
included, as BFCL words them) goes back as tool messages. The next user turn is appended through
the same template delta as tool messages (:meth:`ChatRenderer.observation_ids`), so the
trajectory stays token-exact; :meth:`BfclMultiTurnEnv.bind_tokenizer` checks once that the
template is prefix-preserving for an assistant → user step too.

Every user turn's calls are recorded in order, and the episode's score is
:func:`rlvr.environments.bfcl_executor.check` of them: BFCL's per-turn state and response checks. As in
BFCL's inference loop, more than ``max_steps_per_turn`` (its ``MAXIMUM_STEP_LIMIT``, 20) steps
with calls in one user turn force the conversation to quit; its later user turns then have no
calls, so the check fails it (BFCL's "force_terminated"). An episode the episode loop cuts short
(``max_turns``, ``max_total_tokens``) likewise has fewer turns than the test and fails.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import rlvr
from rlvr.core.environment import StepResult
from rlvr.core.types import Score, Task
from rlvr.environments.bfcl_executor import World, check, function_docs
from rlvr.environments.chat_delta import ChatRenderer
from rlvr.environments.tools import _PROBE_TOOL, TokenStepResult, Tool, ToolsEnv, normalize_schema
from rlvr.verifiers.tool_parsers import get_parser

#: BFCL's ``MAXIMUM_STEP_LIMIT`` (bfcl_eval.constants.default_prompts), not imported so that the
#: environment's settings can be read without bfcl-eval installed
MAXIMUM_STEP_LIMIT = 20

_USER_CHECKED: dict[tuple, bool] = {}  # (tokenizer id, template, system prompt) already checked


def tasks_from_entries(entries: list[dict], category: str = "multi_turn_base") -> list[Task]:
    """One task per BFCL multi-turn test: its first user turn as the prompt, the test itself in
    ``info["entry"]``."""
    return [Task(list(e["question"][0]), None, {"entry": e, "category": category,
                                                 "bfcl_id": e["id"]}, id=e["id"])
            for e in entries]


@rlvr.environment("bfcl_multi_turn")
class BfclMultiTurnEnv(ToolsEnv):
    """BFCL multi_turn_base: its user turns in order over one stateful world, BFCL's checks."""

    #: steps with calls allowed in one user turn; one more forces the conversation to quit (BFCL)
    max_steps_per_turn: int = MAXIMUM_STEP_LIMIT
    #: BFCL's function docs come from the task; nothing else is declared
    tools_from_task: bool = False

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._setting_tools = dict(self._tools)
        self.entry: dict | None = None
        self.world = None
        self.turn_calls: list[list[tuple[str, dict]]] = []  # calls of each user turn so far
        self.steps_in_turn = 0
        self.forced_quit_turn: int | None = None

    def bind_tokenizer(self, tokenizer) -> None:
        """The tools environment's template check, and once per template that appending a user
        message after an assistant turn keeps every earlier token and ends in the generation
        prompt of the next assistant turn (a TemplateError names the template otherwise)."""
        super().bind_tokenizer(tokenizer)
        key = (id(tokenizer), str(tokenizer.chat_template), self.system_prompt)
        if key in _USER_CHECKED:
            return
        r = ChatRenderer(tokenizer, [_PROBE_TOOL])
        history = [{"role": "user", "content": "probe question"}]
        if self.system_prompt:
            history.insert(0, {"role": "system", "content": self.system_prompt})
        answer = {"role": "assistant", "content": "probe answer"}
        nxt = {"role": "user", "content": "probe next question"}
        r.observation_ids(history, answer["content"], [nxt])
        after = [*history, answer, nxt]
        r._require_prefix(r.render_ids(after, True),
                          r.render_ids([*after, {"role": "assistant", "content": "done"}], False),
                          "the generation prompt after a user turn is not how the template "
                          "starts the next assistant turn")
        _USER_CHECKED[key] = True

    def reset(self, task: Task) -> str:
        entry = task.info.get("entry")
        if not isinstance(entry, dict) or not entry.get("question"):
            raise ValueError(f"task {task.id}: the bfcl_multi_turn environment needs the BFCL "
                             f"test in info['entry'] (see tasks_from_entries), got "
                             f"{type(entry).__name__}")
        self.entry = entry
        self.world = world = World(entry, self.tool_timeout_s)
        self.turn_calls = [[]]
        self.steps_in_turn = 0
        self.forced_quit_turn = None

        def backed(name: str):
            return lambda **kwargs: world.call((name, kwargs))

        self._tools = dict(self._setting_tools)  # any ``tools`` setting, then the test's docs
        for doc in function_docs(entry):
            schema = normalize_schema(doc, f"task {task.id} function doc")
            self._tools[doc["name"]] = Tool(doc["name"], schema, backed(doc["name"]))
        return super().reset(task)

    def step(self, action: str) -> StepResult:
        turn = get_parser(self.parser)(action)
        if turn.calls:
            result = super().step(action)  # runs the calls against the world, as tool messages
            # what ran is what BFCL's check re-runs: calls it could read, up to the per-step cap
            self.turn_calls[-1] += [(c.name, dict(c.arguments)) for c in
                                    turn.calls[: self.max_calls_per_turn]
                                    if c.error is None and c.arguments is not None]
            self.steps_in_turn += 1
            if self.steps_in_turn > self.max_steps_per_turn:
                self.forced_quit_turn = len(self.turn_calls) - 1
                return StepResult(done=True, tool_call=result.tool_call, tool_calls=result.tool_calls)
            return result
        self.turns += 1
        history = list(self.messages)
        self.messages.append({"role": "assistant", "content": action})
        asked = len(self.turn_calls)
        if asked >= len(self.entry["question"]):
            return StepResult(done=True)
        new = list(self.entry["question"][asked])
        self.messages += new
        self.turn_calls.append([])
        self.steps_in_turn = 0
        ids = self.renderer.observation_ids(history, action, new)
        return TokenStepResult(observation=self.tokenizer.decode(ids), observation_ids=ids)

    def score(self, completion: str, task: Task) -> Score:
        score = check(self.turn_calls, self.entry, self.tool_timeout_s)
        if self.forced_quit_turn is not None and not score.correct:
            score = replace(score, reason=f"forced to quit after {self.max_steps_per_turn} steps "
                                          f"in turn {self.forced_quit_turn}; {score.reason}")
        return score

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "user_turns": float(len(self.turn_calls)),
                "forced_quit": float(self.forced_quit_turn is not None)}
