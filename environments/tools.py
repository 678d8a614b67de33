"""Tool use in the model's own chat format: the ``tools`` environment.

    env:       the chat template rendered with tools=[schemas], add_generation_prompt=True
    assistant: <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call><|im_end|>
    env:       role "tool" message {"content": "5"}, as the template renders it (loss_mask = 0)
    assistant: The sum is 5.<|im_end|>          ← a turn without calls ends the episode

Tools are Python callables (their JSON schema is read from the signature and docstring), JSON
schemas (OpenAI ``{"type": "function", "function": {...}}`` or a bare ``{"name", "parameters"}``),
or ``"module:attr"`` import paths, given as the ``tools`` setting; a task may declare more in
``info["tools"]`` (JSON schemas) or ``info["functions"]`` (BFCL function docs). Declared tools
without an implementation are shown to the model but not run: a turn that calls one ends the
episode, its calls being the answer (BFCL's single-turn categories).

Calls are read from the turn by a parser of :mod:`rlvr.verifiers.tool_parsers` (``auto`` by
default), several per turn. Each runs in a thread with ``tool_timeout_s``; an unknown tool, bad
arguments, an exception or a timeout becomes an error message to the model, never a crash. The
results are appended as ``role: "tool"`` messages through the template
(:mod:`rlvr.environments.chat_delta`): token-exact, never re-rendering sampled tokens. A template
that is not prefix-preserving for the run's conversation shape is refused when the episode loop
binds the tokenizer, before any episode runs.

A timed-out tool's thread cannot be killed in Python; it is left running (daemon) and its result
dropped. Tools that may hang on I/O should take their own timeouts.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import threading
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import rlvr
from rlvr.core.environment import Environment, StepResult
from rlvr.core.scoring import combine
from rlvr.core.types import Task, ToolCall, Trajectory
from rlvr.environments.chat_delta import ChatRenderer, render_tool_message
from rlvr.verifiers.tool_parsers import ParsedCall, format_for_template, get_parser


@dataclass
class TokenStepResult(StepResult):
    """A step whose observation is already token ids (a chat-template delta): the episode loop
    appends ``observation_ids`` as they are, with ``loss_mask = 0``, instead of encoding text."""

    observation_ids: list[int] | None = None


@dataclass
class Tool:
    """A tool the model may call: its OpenAI-style ``schema`` and, if it can be run, ``fn``."""

    name: str
    schema: dict
    fn: Callable[..., Any] | None = None


# -- schemas ---------------------------------------------------------------------------------------

_PY_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               tuple: "array", dict: "object", type(None): "null"}
#: BFCL (Gorilla) parameter types → JSON schema types
_BFCL_TO_JSON = {"dict": "object", "float": "number", "tuple": "array", "integer": "integer",
                 "string": "string", "boolean": "boolean", "array": "array", "any": None,
                 "String": "string", "int": "integer", "double": "number", "long": "integer",
                 "char": "string", "Boolean": "boolean", "ArrayList": "array", "HashMap": "object"}


def _json_type(tp: Any) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        kinds = [_json_type(a) for a in args if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else {"anyOf": kinds}
    if origin is typing.Literal:
        return {"type": _PY_TO_JSON.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (list, tuple, set):
        out = {"type": "array"}
        if args and args[0] is not Ellipsis:
            out["items"] = _json_type(args[0])
        return out
    if origin is dict:
        return {"type": "object"}
    return {"type": _PY_TO_JSON[tp]} if tp in _PY_TO_JSON else {}


def _arg_docs(doc: str) -> dict[str, str]:
    """``name: text`` lines of a Google-style ``Args:`` section."""
    out: dict[str, str] = {}
    m = re.search(r"^\s*(?:Args|Arguments|Parameters):\s*\n(.*?)(?:\n\s*\n|\n\s*\w+:\s*\n|\Z)",
                  doc, re.S | re.M)
    for line in (m.group(1).splitlines() if m else []):
        lm = re.match(r"\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)", line)
        if lm:
            out[lm.group(1)] = lm.group(2).strip()
    return out


def schema_from_callable(fn: Callable) -> dict:
    """An OpenAI function schema from a callable's signature, type hints and docstring."""
    doc = inspect.getdoc(fn) or ""
    hints = typing.get_type_hints(fn)
    params, required, descriptions = {}, [], _arg_docs(doc)
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        prop = _json_type(hints.get(name, Any))
        if name in descriptions:
            prop["description"] = descriptions[name]
        params[name] = prop
        if p.default is inspect.Parameter.empty:
            required.append(name)
    summary = doc.split("\n\n")[0].strip() if doc else ""
    return {"type": "function", "function": {
        "name": fn.__name__, "description": summary,
        "parameters": {"type": "object", "properties": params, "required": required}}}


def convert_bfcl_types(node: Any) -> Any:
    """A BFCL function doc's parameter tree with JSON schema types (``dict`` → ``object``,
    ``float`` → ``number``, ``tuple`` → ``array``, ``any`` → no type)."""
    if isinstance(node, list):
        return [convert_bfcl_types(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, str):
            mapped = _BFCL_TO_JSON.get(v, v)
            if mapped is not None:
                out[k] = mapped
        elif k == "properties" and isinstance(v, dict):
            out[k] = {name: convert_bfcl_types(p) for name, p in v.items()}
        else:
            out[k] = convert_bfcl_types(v)
    return out


def normalize_schema(spec: dict, where: str = "tool") -> dict:
    """``{"type": "function", "function": {...}}`` from that form, a bare ``{"name", ...}``, or a
    BFCL function doc; a ValueError names what is missing."""
    fn = spec.get("function") if isinstance(spec.get("function"), dict) else spec
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where}: a tool schema needs a 'name' string, got {spec!r:.120}")
    params = convert_bfcl_types(fn.get("parameters") or {"type": "object", "properties": {}})
    return {"type": "function", "function": {"name": fn["name"],
                                             "description": fn.get("description", ""),
                                             "parameters": params}}


def make_tool(spec: Any, where: str = "tool") -> list[Tool]:
    """Tools from a callable, a JSON schema, or a ``"module:attr"`` path to either (or a list)."""
    if isinstance(spec, str):
        mod, sep, attr = spec.partition(":")
        if not sep:
            raise ValueError(f"{where}: {spec!r} must be 'module:attribute'")
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{where}: cannot import {spec!r} ({type(e).__name__}: {e})") from None
        return make_tools(obj if isinstance(obj, (list, tuple)) else [obj], where)
    if callable(spec):
        schema = schema_from_callable(spec)
        return [Tool(schema["function"]["name"], schema, spec)]
    if isinstance(spec, dict):
        schema = normalize_schema(spec, where)
        return [Tool(schema["function"]["name"], schema)]
    raise ValueError(f"{where}: a tool is a callable, a JSON schema or 'module:attr', "
                     f"got {type(spec).__name__}")


def make_tools(specs: list, where: str = "tools") -> list[Tool]:
    tools: list[Tool] = []
    for i, s in enumerate(specs):
        tools.extend(make_tool(s, f"{where}[{i}]"))
    return tools


# -- running calls ---------------------------------------------------------------------------------

def run_call(tool: Tool, arguments: dict, timeout_s: float) -> tuple[str, str | None]:
    """``(result text, None)``, or ``("", error message)`` when the call raised or timed out."""
    required = tool.schema["function"]["parameters"].get("required", [])
    missing = [r for r in required if r not in arguments]
    if missing:
        return "", f"{tool.name} is missing required argument(s): {', '.join(missing)}"
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = tool.fn(**arguments)
        except BaseException as e:  # noqa: BLE001 - any failure of the tool is the model's message
            box["error"] = f"{tool.name} raised {type(e).__name__}: {e}"

    t = threading.Thread(target=target, daemon=True, name=f"tool-{tool.name}")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        return "", f"{tool.name} timed out after {timeout_s:g} s"
    if "error" in box:
        return "", box["error"]
    value = box.get("value")
    if isinstance(value, str):
        return value, None
    try:
        return json.dumps(value, ensure_ascii=False, default=str), None
    except (TypeError, ValueError):
        return str(value), None


# -- the environment -------------------------------------------------------------------------------

_CHECKED: dict[tuple, bool] = {}  # (tokenizer id, template, tool-count shape) already checked


@rlvr.environment("tools")
class ToolsEnv(Environment):
    """Tools passed to the chat template; calls parsed in the model's format; results as tool messages."""

    stop_strings: ClassVar[list[str]] = []
    end_at_eos = False  # a turn ends at the template's end-of-turn token: step reads every turn

    #: callables, JSON schemas or "module:attr" paths (a list attribute holds several)
    tools: list = []
    #: call format: auto | hermes | llama3_json | mistral | pythonic | json | template (from the chat template)
    parser: str = "auto"
    #: seconds one tool call may run
    tool_timeout_s: float = 10.0
    #: calls run per turn; more are answered with an error
    max_calls_per_turn: int = 8
    #: characters of one tool result kept (the rest is cut, saying so)
    max_result_chars: int = 4000
    #: also declare the task's info["tools"] / info["functions"] (shown, not run)
    tools_from_task: bool = True

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.parser != "template":
            get_parser(self.parser)  # an unknown name fails here, listing the known ones
        self._tools = {t.name: t for t in make_tools(list(self.tools), "env.settings.tools")}
        self.tokenizer = None
        self.renderer: ChatRenderer | None = None
        self.messages: list[dict] = []
        self.calls = self.errors = self.turns = 0

    # -- the episode loop's hooks -------------------------------------------------------------
    def bind_tokenizer(self, tokenizer) -> None:
        """Called by the episode loop before reset: the template renders every turn. The first
        time a tokenizer and tool set are seen, the template is checked to be prefix-preserving
        on a probe conversation of this shape (a TemplateError stops the run, naming it)."""
        self.tokenizer = tokenizer
        if self.parser == "template":
            self.parser = format_for_template(getattr(tokenizer, "chat_template", None))
        schemas = [t.schema for t in self._tools.values()] or [_PROBE_TOOL]
        key = (id(tokenizer), str(tokenizer.chat_template), len(schemas), self.system_prompt)
        if key in _CHECKED:
            return
        r = ChatRenderer(tokenizer, schemas)
        history = [{"role": "user", "content": "probe question"}]
        if self.system_prompt:
            history.insert(0, {"role": "system", "content": self.system_prompt})
        name = schemas[0]["function"]["name"]
        call = f'<tool_call>\n{{"name": "{name}", "arguments": {{}}}}\n</tool_call>'
        results = [render_tool_message(name, "probe result 1", "call0"),
                   render_tool_message(name, "probe result 2", "call1")]
        r.check_prefix_preserving(history, call, results)
        _CHECKED[key] = True

    def reset(self, task: Task) -> str:
        if self.tokenizer is None:
            raise RuntimeError("the tools environment renders through the chat template: the "
                               "episode loop must call bind_tokenizer(tokenizer) before reset")
        self.task = task
        tools = dict(self._tools)
        if self.tools_from_task:
            for key in ("tools", "functions"):
                specs = task.info.get(key) or []
                for t in make_tools(specs if isinstance(specs, list) else [specs],
                                    f"task {task.id} info.{key}"):
                    tools.setdefault(t.name, t)
        self.episode_tools = tools
        self.renderer = ChatRenderer(self.tokenizer, [t.schema for t in tools.values()])
        prompt = task.prompt
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.system_prompt and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        self.messages = messages
        return self.renderer.render_text(messages, add_generation_prompt=True)

    def step(self, action: str) -> StepResult:
        self.turns += 1
        turn = get_parser(self.parser)(action)
        if not turn.calls:
            self.messages.append({"role": "assistant", "content": action})
            return StepResult(done=True)
        records: list[ToolCall] = []
        if any(c.error is None and c.name in self.episode_tools
               and self.episode_tools[c.name].fn is None for c in turn.calls):
            # a declared-only tool: the calls are the episode's answer (BFCL single-turn)
            self.calls += len(turn.calls)
            self.messages.append({"role": "assistant", "content": action})
            records = [_record(c) for c in turn.calls]
            return StepResult(done=True, tool_call=records[0], tool_calls=records)
        results = []
        for i, call in enumerate(turn.calls):
            text, err = self._run(call, i)
            self.calls += 1
            self.errors += err is not None
            records.append(_record(call, err))
            content = text if err is None else json.dumps({"error": err})
            results.append(render_tool_message(call.name or "unknown", content, f"call{self.calls}"))
        history = list(self.messages)
        self.messages += [{"role": "assistant", "content": action}, *results]
        ids = self.renderer.observation_ids(history, action, results)
        return TokenStepResult(observation=self.tokenizer.decode(ids), observation_ids=ids,
                               tool_call=records[0], tool_calls=records)

    def _run(self, call: ParsedCall, index: int) -> tuple[str, str | None]:
        if call.error is not None:
            return "", call.error
        if index >= self.max_calls_per_turn:
            return "", f"at most {self.max_calls_per_turn} calls run per turn; {call.name} was not run"
        tool = self.episode_tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.episode_tools)) or "(none)"
            return "", f"unknown tool {call.name!r}; the tools are: {known}"
        text, err = run_call(tool, call.arguments or {}, self.tool_timeout_s)
        if err is None and len(text) > self.max_result_chars:
            text = text[: self.max_result_chars] + f" ... [cut at {self.max_result_chars} characters]"
        return text, err

    def score(self, completion: str, task: Task):
        info = {"parser": self.parser, **task.info}
        return combine(self.verifiers, completion, task.answer, **info)

    def metrics(self) -> dict[str, float]:
        return {"tool_calls": float(self.calls), "tool_errors": float(self.errors),
                "tool_turns": float(self.turns)}

    @classmethod
    def batch_metrics(cls, trajectories: list[Trajectory]) -> dict[str, float]:
        n = max(1, len(trajectories))
        calls = sum(t.info.get("tool_calls", 0.0) for t in trajectories)
        errors = sum(t.info.get("tool_errors", 0.0) for t in trajectories)
        return {"tool_calls_per_episode": calls / n,
                "tool_error_rate": errors / calls if calls else 0.0}


_PROBE_TOOL = {"type": "function", "function": {
    "name": "probe", "description": "A probe tool for the template check.",
    "parameters": {"type": "object", "properties": {}, "required": []}}}


def _record(call: ParsedCall, err: str | None = None) -> ToolCall:
    error = call.error or err
    return ToolCall(call.name, json.dumps(call.arguments) if call.arguments is not None else call.raw,
                    valid=error is None, error=error)
