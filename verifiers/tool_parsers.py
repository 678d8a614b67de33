"""Tool calls read from a model's text in its chat template's own format.

A parser is one function ``text -> ParsedTurn`` registered by name in :data:`PARSERS`:

``hermes``
    Hermes / Qwen2.5 / Qwen3: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one
    block per call.
``llama3_json``
    Llama 3.1-3.3 custom tools: an optional ``<|python_tag|>``, then a JSON object
    ``{"name": ..., "parameters": {...}}``; several calls separated by ``;`` or new lines, or a list.
``mistral``
    ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` (v3 templates) or
    ``[TOOL_CALLS]name[ARGS]{...}`` (v11 and later).
``pythonic``
    BFCL's prompting format: ``[func(a=1, b="x"), other(c=[1, 2])]`` (literals only).
``json``
    The fallback: the whole text (code fences removed) is one call object or a list of them.
``auto``
    The first of the above whose marker is in the text; Python calls, then plain JSON, otherwise.

A parser never raises: a call it cannot read is a :class:`ParsedCall` with ``error`` set (the
environment shows the message to the model), and text with no call is a turn with no calls.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

#: End-of-turn and padding tokens that may trail a decoded turn; removed before parsing.
TRAILING_SPECIALS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "</s>",
                     "<|endoftext|>", "<end_of_turn>", "<|end|>", "<|pad|>")


@dataclass
class ParsedCall:
    """One call as the model wrote it: ``name`` and ``arguments`` (None when unreadable)."""

    name: str
    arguments: dict[str, Any] | None
    raw: str = ""
    error: str | None = None  # why the call cannot be run, in words for the model


@dataclass
class ParsedTurn:
    """A turn's calls, in order, and its text outside them (the model's answer when no calls)."""

    calls: list[ParsedCall] = field(default_factory=list)
    content: str = ""

    @property
    def valid_calls(self) -> list[ParsedCall]:
        return [c for c in self.calls if c.error is None]


PARSERS: dict[str, Callable[[str], ParsedTurn]] = {}


def tool_parser(name: str):
    """Register ``fn(text) -> ParsedTurn`` under ``name``; duplicate names raise."""
    def add(fn):
        if name in PARSERS:
            raise ValueError(f"tool parser {name!r} is already registered")
        PARSERS[name] = fn
        return fn
    return add


def get_parser(name: str) -> Callable[[str], ParsedTurn]:
    try:
        return PARSERS[name]
    except KeyError:
        raise KeyError(f"unknown tool parser {name!r}; known: {', '.join(sorted(PARSERS))}") from None


def parse_tool_calls(text: str, parser: str = "auto") -> ParsedTurn:
    """The calls in ``text`` read by the parser named ``parser``."""
    return get_parser(parser)(strip_trailing_specials(text))


def strip_trailing_specials(text: str) -> str:
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for tok in TRAILING_SPECIALS:
            if text.endswith(tok):
                text, changed = text[: -len(tok)].rstrip(), True
    return text


def call_from_obj(obj: Any, raw: str) -> ParsedCall:
    """``{"name", "arguments" | "parameters"}`` (OpenAI's ``{"function": {...}}`` too; arguments
    may be a JSON string) → a call, or a call with ``error`` saying what is wrong."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict):
        return ParsedCall("", None, raw, f"a tool call must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall("", None, raw, 'a tool call needs a "name" string')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError) as e:
            return ParsedCall(name, None, raw, f'the "arguments" of {name} are not valid JSON ({e})')
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ParsedCall(name, None, raw, f'the "arguments" of {name} must be an object, '
                                           f'got {type(args).__name__}')
    return ParsedCall(name, args, raw)


def _loads(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as e:
        return None, f"not valid JSON ({e})"


def _calls_from_json_text(text: str) -> list[ParsedCall]:
    obj, err = _loads(text)
    if err:
        return [ParsedCall("", None, text, f"tool call {text[:80]!r} is {err}")]
    items = obj if isinstance(obj, list) else [obj]
    return [call_from_obj(o, json.dumps(o)) for o in items]


_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


@tool_parser("hermes")
def parse_hermes(text: str) -> ParsedTurn:
    """``<tool_call>{json}</tool_call>`` blocks (Hermes, Qwen2.5, Qwen3)."""
    calls: list[ParsedCall] = []
    for m in _TOOL_CALL.finditer(text):
        body = m.group(1).strip()
        calls.extend(_calls_from_json_text(body) if body else
                     [ParsedCall("", None, m.group(0), "empty <tool_call> block")])
    return ParsedTurn(calls, _TOOL_CALL.sub("", text).strip())


@tool_parser("llama3_json")
def parse_llama3_json(text: str) -> ParsedTurn:
    """``<|python_tag|>``? then ``{"name", "parameters"}`` objects (``;`` / new-line separated)."""
    body = text.split("<|python_tag|>", 1)[1] if "<|python_tag|>" in text else text
    body = _unfence(body)
    if not body.startswith(("{", "[")):
        return ParsedTurn([], text.strip())
    obj, err = _loads(body)
    if err is None:
        items = obj if isinstance(obj, list) else [obj]
        return ParsedTurn([call_from_obj(o, json.dumps(o)) for o in items])
    parts = [p.strip() for p in re.split(r";\s*(?=\{)|\n\s*(?=\{)", body) if p.strip()]
    calls = [c for p in parts for c in _calls_from_json_text(p)]
    return ParsedTurn(calls)


_MISTRAL_V11 = re.compile(r"\[TOOL_CALLS\]\s*([^\[\s{]+)\s*\[ARGS\]", re.S)


@tool_parser("mistral")
def parse_mistral(text: str) -> ParsedTurn:
    """``[TOOL_CALLS][{...}, ...]`` or ``[TOOL_CALLS]name[ARGS]{...}`` (Mistral templates)."""
    if "[TOOL_CALLS]" not in text:
        return ParsedTurn([], text.strip())
    content, rest = text.split("[TOOL_CALLS]", 1)
    if _MISTRAL_V11.search(text):
        calls = []
        pieces = _MISTRAL_V11.split(text)  # [before, name1, args1, name2, args2, ...]
        for name, args in zip(pieces[1::2], pieces[2::2]):
            obj, err = _loads(args.strip())
            calls.append(ParsedCall(name, None, args, f"the arguments of {name} are {err}") if err
                         else call_from_obj({"name": name, "arguments": obj}, args))
        return ParsedTurn(calls, pieces[0].strip())
    return ParsedTurn(_calls_from_json_text(rest.strip()), content.strip())


@tool_parser("pythonic")
def parse_pythonic(text: str) -> ParsedTurn:
    """``[f(a=1), g(b="x")]`` (BFCL's prompting format): keyword arguments with literal values."""
    body = _unfence(text)
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return ParsedTurn([], text.strip())
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    if not nodes or not all(isinstance(n, ast.Call) for n in nodes):
        return ParsedTurn([], text.strip())
    calls = []
    for n in nodes:
        raw = ast.get_source_segment(body, n) or ""
        name = _dotted(n.func)
        if name is None:
            calls.append(ParsedCall("", None, raw, "the called function must be a plain name"))
            continue
        try:
            if n.args:
                raise ValueError("positional arguments are not allowed; name every argument")
            args = {k.arg: ast.literal_eval(k.value) for k in n.keywords if k.arg is not None}
        except (ValueError, SyntaxError, TypeError) as e:
            calls.append(ParsedCall(name, None, raw, f"the arguments of {name} are not literals ({e})"))
            continue
        calls.append(ParsedCall(name, args, raw))
    return ParsedTurn(calls)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


@tool_parser("json")
def parse_json(text: str) -> ParsedTurn:
    """The whole text is one call object or a list of them; anything else is a plain answer."""
    body = _unfence(text)
    if not body.startswith(("{", "[")):
        return ParsedTurn([], text.strip())
    obj, err = _loads(body)
    if err is not None:
        return ParsedTurn([ParsedCall("", None, body, f"tool call {body[:80]!r} is {err}")])
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        return ParsedTurn([], "")
    return ParsedTurn([call_from_obj(o, json.dumps(o)) for o in items])


@tool_parser("auto")
def parse_auto(text: str) -> ParsedTurn:
    """The parser whose marker appears in the text; else Python calls, then JSON."""
    if "<tool_call>" in text:
        return parse_hermes(text)
    if "[TOOL_CALLS]" in text:
        return parse_mistral(text)
    if "<|python_tag|>" in text:
        return parse_llama3_json(text)
    pythonic = parse_pythonic(text)  # tried first: `[f(a=1)]` is not JSON but starts like it
    if pythonic.calls:
        return pythonic
    return parse_llama3_json(text)  # plain JSON, also ';'-separated objects


def _unfence(text: str) -> str:
    """Text without a surrounding Markdown code fence."""
    t = text.strip()
    m = re.fullmatch(r"```[\w-]*\s*(.*?)\s*```", t, re.S)
    return m.group(1).strip() if m else t


def format_for_template(chat_template: str | None) -> str:
    """The parser a chat template's tool format calls for ("hermes" when it names none)."""
    t = chat_template or ""
    if "[TOOL_CALLS]" in t:
        return "mistral"
    if "<tool_call>" in t:
        return "hermes"
    if "<|python_tag|>" in t or "ipython" in t:
        return "llama3_json"
    return "hermes"
