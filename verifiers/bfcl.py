"""BFCL's AST check of function calls (Berkeley Function Calling Leaderboard, Patil et al. 2024,
https://gorilla.cs.berkeley.edu/leaderboard.html), written from its published rules.

The answer is BFCL's ``ground_truth``: a list of calls ``{function name: {param: [allowed
values]}}``; ``info["functions"]`` holds the function docs (types, required parameters) and
``info["category"]`` the test category. The completion's calls are read by a tool parser
(``info["parser"]``, default ``auto``). A completion is correct when:

- the number of calls equals the number of answer calls (``simple``, ``multiple``: one);
- each answer call is matched by a distinct model call, in any order (``parallel*``);
- a matched call names the answer's function (``a.b`` may be written ``a_b``, as models that
  cannot take dots in names do), passes every required parameter, and no parameter the function
  or the answer does not have;
- each value has the documented type — an ``integer`` for a ``float`` parameter is accepted,
  ``tuple`` is a list, ``any`` is anything; list items are checked against ``items``; as in
  BFCL, the type of the answer's own values is accepted too where it differs from the doc;
- each value is allowed: strings compare after normalisation (lower case; spaces and
  ``, . / - _ * ^`` removed; ``'`` read as ``"``), lists element-wise, dicts key by key, every
  other value by equality; an answer parameter the model left out must allow ``""`` (may be
  omitted).

``irrelevance`` categories are correct when the completion holds no valid call, ``live_relevance``
when it holds at least one. The reward is
1.0 or 0.0; the reason names the first failure (wrong function, missing required parameter,
value not allowed, type mismatch, wrong number of calls, ...).
"""

from __future__ import annotations

import re
from typing import Any

from rlvr.core.registry import verifier
from rlvr.core.types import Score
from rlvr.verifiers.tool_parsers import parse_tool_calls

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,), "int": (int,), "long": (int,), "float": (float, int), "number": (float, int),
    "double": (float, int), "string": (str,), "String": (str,), "char": (str,),
    "boolean": (bool,), "Boolean": (bool,), "array": (list,), "tuple": (list,),
    "ArrayList": (list,), "dict": (dict,), "object": (dict,), "HashMap": (dict,),
}
_STRIP = re.compile(r"[ ,./\-_*^]")


def standardize(s: str) -> str:
    """BFCL's string normalisation: lower case, no spaces or ``, . / - _ * ^``, ``'`` as ``"``."""
    return _STRIP.sub("", s).lower().replace("'", '"')


def _type_ok(value: Any, schema: dict) -> str:
    """"" when ``value`` fits the documented ``schema`` type, else what is wrong."""
    kind = schema.get("type")
    if kind in (None, "any") or kind not in _PY_TYPES:
        return ""
    allowed = _PY_TYPES[kind]
    if isinstance(value, bool) and bool not in allowed:
        return f"expected {kind}, got boolean"
    if not isinstance(value, allowed):
        return f"expected {kind}, got {type(value).__name__}"
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        for i, v in enumerate(value):
            why = _type_ok(v, items)
            if why:
                return f"item {i}: {why}"
    return ""


def _same(value: Any, allowed: Any) -> bool:
    """One model value against one allowed value (strings normalised, containers recursively)."""
    if value is None or allowed is None:
        return value is allowed
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    if isinstance(value, str) and isinstance(allowed, str):
        return standardize(value) == standardize(allowed)
    if isinstance(value, list) and isinstance(allowed, list):
        return len(value) == len(allowed) and all(map(_same, value, allowed))
    if isinstance(value, dict) and isinstance(allowed, dict):
        return _dict_ok(value, allowed)
    if isinstance(value, (int, float)) and isinstance(allowed, (int, float)):
        return value == allowed
    return False


def _dict_ok(value: dict, allowed: dict) -> bool:
    """A dict value against one allowed dict whose entries are lists of allowed values (as
    BFCL nests them) or plain values."""
    for k, v in value.items():
        if k not in allowed:
            return False
        options = allowed[k] if isinstance(allowed[k], list) else [allowed[k]]
        if not any(_same(v, o) for o in options) and not _same(v, allowed[k]):
            return False
    return all(k in value or (isinstance(o, list) and "" in o) for k, o in allowed.items())


def _allowed(value: Any, options: list) -> bool:
    return any(_same(value, o) for o in options if o != "")


def _names_match(model: str, answer: str) -> bool:
    return model == answer or model == answer.replace(".", "_")


def _find_doc(functions: list, name: str) -> dict | None:
    for f in functions or []:
        if isinstance(f, dict) and _names_match(name, str(f.get("name", ""))):
            return f
    return None


def check_call(name: str, args: dict, answer: dict, functions: list) -> str:
    """"" when one model call matches one answer call ``{function: {param: [allowed]}}``, else
    the reason it does not."""
    (fname, expected), = answer.items()
    if not _names_match(name, fname):
        return f"wrong function: expected {fname}, got {name}"
    doc = _find_doc(functions, fname) or {}
    params = (doc.get("parameters") or {})
    props = params.get("properties") or {}
    for req in params.get("required") or []:
        if req not in args:
            return f"{fname}: missing required parameter {req!r}"
    for key, value in args.items():
        if (props and key not in props) or key not in expected:
            return f"{fname}: unexpected parameter {key!r}"
        if key in props:
            why = _type_ok(value, props[key])
            # BFCL accepts the answer's own type where it differs from the doc (a documented
            # string whose answer is a boolean, a variable name for a number)
            if why and not any(type(o) is type(value) for o in expected[key] if o != ""):
                return f"{fname}: type mismatch for {key!r}: {why}"
        if not _allowed(value, expected[key]):
            shown = [o for o in expected[key] if o != ""]
            return f"{fname}: value not allowed for {key!r}: got {value!r:.60}, allowed {shown!r:.120}"
    for key, options in expected.items():
        if key not in args and "" not in options:
            return f"{fname}: missing parameter {key!r} the answer requires (allowed {options!r:.80})"
    return ""


def match_calls(calls: list[tuple[str, dict]], answer: list[dict], functions: list) -> str:
    """"" when the calls match the answer calls one to one in some order, else the reason."""
    if len(calls) != len(answer):
        return f"wrong number of calls: expected {len(answer)}, got {len(calls)}"
    reasons: list[str] = []

    def assign(i: int, used: frozenset) -> bool:  # backtracking: a handful of calls at most
        if i == len(answer):
            return True
        for j, (name, args) in enumerate(calls):
            if j in used:
                continue
            why = check_call(name, args, answer[i], functions)
            if not why and assign(i + 1, used | {j}):
                return True
            if why:
                reasons.append(why)
        return False

    if assign(0, frozenset()):
        return ""
    if len(answer) == 1:
        return reasons[0] if reasons else "no call matches"
    first = next(iter(answer[0]))
    return f"no one-to-one match of the calls to the answer (e.g. {reasons[0] if reasons else first})"


def _answer_problem(answer: Any) -> str:
    if not isinstance(answer, list):
        return f"a BFCL answer is a list of calls {{function: {{param: [values]}}}}, got {type(answer).__name__}"
    for c in answer:
        if not (isinstance(c, dict) and len(c) == 1 and isinstance(next(iter(c.values())), dict)):
            return f"each BFCL answer call is {{function: {{param: [values]}}}}, got {c!r:.80}"
    return ""


@verifier("bfcl", check_answer=_answer_problem)
def bfcl(completion: str, answer: Any, **info: Any) -> Score:
    """BFCL AST check: function, required parameters, types and allowed values; parallel calls in any order."""
    if not isinstance(completion, str):
        return Score(0.0, False, reason=f"completion is {type(completion).__name__}, not text")
    category = str(info.get("category", ""))
    try:
        turn = parse_tool_calls(completion, str(info.get("parser") or "auto"))
    except KeyError as e:
        return Score(0.0, False, reason=str(e))
    if "irrelevance" in category:
        valid = turn.valid_calls
        if valid:
            return Score(0.0, False, reason=f"irrelevant question, but the completion calls {valid[0].name}")
        return Score(1.0, True, reason="")
    if "relevance" in category:  # live_relevance: some call is expected, none is checked
        ok = bool(turn.valid_calls)
        return Score(float(ok), ok, reason="" if ok else "relevant question, but no valid call")
    problem = _answer_problem(answer)
    if problem:
        return Score(0.0, False, reason=problem)
    bad = [c for c in turn.calls if c.error is not None]
    if bad:
        return Score(0.0, False, reason=f"malformed call: {bad[0].error}")
    if not turn.calls:
        return Score(0.0, False, reason="no function call in the completion")
    why = match_calls([(c.name, c.arguments or {}) for c in turn.calls], answer,
                      info.get("functions") or [])
    return Score(0.0 if why else 1.0, not why, reason=why)


def oracle_calls(answer: list[dict], functions: list | None = None) -> list[dict]:
    """The answer as calls ``{"name", "arguments"}``: a parameter that may be omitted (``""``
    allowed) and is not required by its function doc is left out; every other parameter gets its
    first allowed value other than ``""`` (BFCL lists ``""`` for some required ones too)."""
    def first(options: Any) -> Any:
        if not isinstance(options, list):
            return realize(options)
        return realize(next(o for o in options if o != ""))

    def omit(options: Any, required: bool) -> bool:
        if not isinstance(options, list):
            return False
        return not any(o != "" for o in options) or ("" in options and not required)

    def realize(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: first(v) for k, v in value.items() if not omit(v, False)}
        if isinstance(value, list):
            return [realize(v) for v in value]
        return value

    out = []
    for call in answer:
        (name, params), = call.items()
        doc = _find_doc(functions or [], name) or {}
        required = set((doc.get("parameters") or {}).get("required") or [])
        out.append({"name": name, "arguments": {k: first(v) for k, v in params.items()
                                                if not omit(v, k in required)}})
    return out


def unsatisfiable(answer: list[dict], functions: list) -> str:
    """Why no call can match ``answer`` under these rules (a parameter the doc requires that the
    answer does not list, or one the answer requires that the doc does not have: defects of a
    few BFCL rows); "" otherwise."""
    for call in answer:
        (name, params), = call.items()
        doc = _find_doc(functions, name) or {}
        for req in (doc.get("parameters") or {}).get("required") or []:
            if req not in params:
                return f"{name} requires {req!r}, which its answer does not list"
        props = (doc.get("parameters") or {}).get("properties") or {}
        for key, options in params.items():
            if options == []:
                return f"the answer of {name} allows no value for {key!r}"
            if props and key not in props and "" not in options:
                return f"the answer of {name} requires {key!r}, which its doc does not have"
    return ""
