"""BFCL v4's ``multi_turn_base``: run calls against its stateful API classes and check each turn.

The tests, their ground truth and the API classes (``GorillaFileSystem``, ``MathAPI``,
``MessageAPI``, ``TwitterAPI``, ``TicketAPI``, ``TradingBot``, ``TravelAPI``,
``VehicleControlAPI``) are read at run time from an installed ``bfcl-eval`` (see
:mod:`rlvr.data.bfcl`); nothing of BFCL is copied here.

A test is one conversation of several user turns over one world: ``initial_config`` sets up the
instances of its ``involved_classes`` and every call of every turn acts on the same instances.
:class:`World` holds them. Calls are never ``eval``-ed: a call string is parsed with :mod:`ast`
into a name and literal arguments, the name is looked up among the public methods of the
instances, and the method runs in a thread with a time limit; whatever it raises becomes the
call's result text, as in BFCL, so a wrong call is something the model reads, not a crash.

:func:`check` follows BFCL's published multi-turn rules. The ground truth is run turn by turn on
its own fresh world, the model's calls on another; after each turn whose ground truth is not
empty:

- the model must have made at least one call in that turn;
- state check: every public attribute of every ground-truth instance equals the model
  instance's (private ``_``-attributes such as random generators are not compared);
- response check: the results of that turn's ground-truth calls are, as a multiset, contained in
  the results of all the model's calls so far (any order; earlier turns count, since a model may
  have fetched something before it was asked for).

The model's turns must be as many as the user turns (BFCL fails a conversation that was cut
short, e.g. after its step limit). The test is correct when every turn passes; the reason names
the first turn and check that fail.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
import threading
from typing import Any

from rlvr.core.types import Score
from rlvr.data.bfcl import INSTALL_HINT, _rows, data_dir

#: multi-turn categories this module runs (the others need long contexts or missing functions)
MULTI_TURN = ("multi_turn_base",)
_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
#: API class → (module under :data:`_PACKAGE`, function-doc file under ``multi_turn_func_doc``)
CLASSES: dict[str, tuple[str, str]] = {
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}
CALL_TIMEOUT_S = 10.0
_MISSING = object()


# -- data ------------------------------------------------------------------------------------------

def load_entries(category: str = "multi_turn_base", limit: int = 0) -> list[dict]:
    """The category's tests as BFCL writes them, each with its ``ground_truth`` (a list per turn
    of call strings) joined in from ``possible_answer``."""
    if category not in MULTI_TURN:
        raise ValueError(f"BFCL category {category!r} is not a multi-turn category this reader "
                         f"runs; known: {', '.join(MULTI_TURN)}")
    root = data_dir()
    path = root / f"BFCL_v4_{category}.json"
    answers_path = root / "possible_answer" / path.name
    for p in (path, answers_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such BFCL file ({INSTALL_HINT})")
    answers = {r["id"]: r["ground_truth"] for r in _rows(answers_path)}
    entries = []
    for row in _rows(path):
        if row["id"] not in answers:
            raise ValueError(f"{answers_path}: no ground truth for test {row['id']}")
        gt = answers[row["id"]]
        if len(gt) != len(row["question"]):
            raise ValueError(f"{answers_path}: test {row['id']} has {len(gt)} ground-truth turns "
                             f"for {len(row['question'])} user turns")
        unknown = [c for c in row["involved_classes"] if c not in CLASSES]
        if unknown:
            raise ValueError(f"{path}: test {row['id']} involves unknown API class(es) {unknown}; "
                             f"known: {', '.join(CLASSES)}")
        entries.append({**row, "ground_truth": gt})
        if limit and len(entries) >= limit:
            break
    return entries


def function_docs(entry: dict) -> list[dict]:
    """The function docs a model is shown for ``entry``: those of its involved classes, less its
    ``excluded_function`` names."""
    excluded = set(entry.get("excluded_function", []))
    docs = []
    for cls in entry["involved_classes"]:
        doc_path = data_dir() / "multi_turn_func_doc" / CLASSES[cls][1]
        docs += [d for d in _rows(doc_path) if d["name"] not in excluded]
    return docs


# -- calls -----------------------------------------------------------------------------------------

def parse_call(text: str) -> tuple[str, list, dict]:
    """``"mv(source='a', destination='b')"`` → ``("mv", [], {"source": "a", ...})``.

    Only a plain name called with literal arguments is accepted (BFCL's own ground truth passes
    some positionally); anything else raises ``ValueError`` naming what is wrong."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError) as e:
        raise ValueError(f"not a function call: {text!r} ({e})") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a call of a plain function name: {text!r}")
    if any(k.arg is None for k in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
        raise ValueError(f"*args / **kwargs are not allowed: {text!r}")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except (ValueError, SyntaxError, TypeError, RecursionError):
        raise ValueError(f"the arguments of {node.func.id} are not literals: {text!r}") from None
    return node.func.id, args, kwargs


def result_text(value: Any) -> str:
    """A call's return value as the text the model reads (BFCL's rule: strings as they are,
    dicts as JSON where they can be, everything else ``str``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


class World:
    """The API instances of one test, set up from its ``initial_config``."""

    def __init__(self, entry: dict, timeout_s: float = CALL_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.instances: dict[str, Any] = {}
        self.methods: dict[str, Any] = {}
        for cls_name in entry["involved_classes"]:
            if cls_name not in CLASSES:
                raise ValueError(f"test {entry.get('id')}: unknown API class {cls_name!r}")
            module = importlib.import_module(f"{_PACKAGE}.{CLASSES[cls_name][0]}")
            inst = getattr(module, cls_name)()
            loader = getattr(inst, "_load_scenario", None)
            if loader is not None:  # MathAPI is stateless and has none
                loader(copy.deepcopy(entry.get("initial_config", {}).get(cls_name, {})),
                       long_context=False)
            self.instances[cls_name] = inst
            # a later class's method shadows an earlier one's of the same name, as in BFCL
            for name, method in inspect.getmembers(inst, predicate=inspect.ismethod):
                if not name.startswith("_"):
                    self.methods[name] = method

    def call(self, call: str | tuple[str, dict]) -> str:
        """Run one call (a call string, or ``(name, keyword arguments)``); its result text."""
        try:
            if isinstance(call, str):
                name, args, kwargs = parse_call(call)
            else:
                name, kwargs = call
                args, kwargs = [], dict(kwargs or {})
            # BFCL's doc names may carry the class ("GorillaFileSystem.cd"); the method is the tail
            method = self.methods.get(name.rsplit(".", 1)[-1])
            if method is None:
                raise ValueError(f"no such function: {name}")
            inspect.signature(method).bind(*args, **kwargs)
        except (ValueError, TypeError) as e:
            return f"Error during execution: {e}"
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = method(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the API's failure is the model's message
                box["error"] = str(e)

        t = threading.Thread(target=target, daemon=True, name=f"bfcl-{name}")
        t.start()
        t.join(self.timeout_s)
        if t.is_alive():
            return f"Error during execution: {name} timed out after {self.timeout_s:g} s"
        if "error" in box:
            return f"Error during execution: {box['error']}"
        return result_text(box.get("value"))

    def run(self, calls: list) -> list[str]:
        return [self.call(c) for c in calls]

    def state(self) -> dict[str, dict[str, Any]]:
        """Public attributes of every instance (what the state check compares)."""
        return {c: {k: v for k, v in vars(i).items() if not k.startswith("_")}
                for c, i in self.instances.items()}


# -- the check -------------------------------------------------------------------------------------

def state_difference(model: World, truth: World) -> str:
    """"" when every public attribute of every ground-truth instance equals the model's."""
    for cls_name, gt in truth.instances.items():
        mine = model.instances[cls_name]
        diff = [k for k, v in vars(gt).items()
                if not k.startswith("_") and getattr(mine, k, _MISSING) != v]
        if diff:
            return f"{cls_name} state differs in {', '.join(diff)}"
    return ""



def missing_results(model_results: list[str], truth_results: list[str]) -> list[str]:
    """Ground-truth results not found in the model's, each model result used at most once."""
    pool = list(model_results)
    missing = []
    for r in truth_results:
        if r in pool:
            pool.remove(r)
        else:
            missing.append(r)
    return missing


def check(model_turns: list[list], entry: dict, timeout_s: float = CALL_TIMEOUT_S) -> Score:
    """Score the model's calls of each turn (a list per turn of call strings or ``(name,
    arguments)``; the steps of a turn flattened in order) against the entry's ground truth."""
    truth_turns = entry["ground_truth"]
    if len(model_turns) != len(truth_turns):  # BFCL: a cut-short conversation fails whole
        return Score(0.0, False, reason=f"{len(model_turns)} turns of calls for "
                                        f"{len(truth_turns)} user turns")
    model, truth = World(entry, timeout_s), World(entry, timeout_s)
    seen: list[str] = []
    turns_ok = 0
    for i, gt_calls in enumerate(truth_turns):
        seen += model.run(model_turns[i])
        gt_results = truth.run(gt_calls)
        if not gt_calls:  # the model should not be able to act here; nothing to compare
            turns_ok += 1
            continue
        if not model_turns[i]:
            return _fail(turns_ok, len(truth_turns), f"turn {i}: no function call")
        why = state_difference(model, truth)
        if why:
            return _fail(turns_ok, len(truth_turns), f"turn {i}: state check: {why}")
        missing = missing_results(seen, gt_results)
        if missing:
            return _fail(turns_ok, len(truth_turns), f"turn {i}: response check: "
                         f"{len(missing)} ground-truth result(s) missing, first {missing[0][:200]!r}")
        turns_ok += 1
    return Score(1.0, True, parts={"turns_passed": float(turns_ok)})


def _fail(turns_ok: int, n: int, reason: str) -> Score:
    return Score(0.0, False, parts={"turns_passed": float(turns_ok)}, reason=reason)


def _main(argv: list[str]) -> int:
    """``python -m rlvr.environments.bfcl_executor [LIMIT]``: the ground truth checked against itself."""
    entries = load_entries(limit=int(argv[0]) if argv else 0)
    bad = [(e["id"], s.reason) for e in entries if not (s := check(e["ground_truth"], e)).correct]
    print(f"{len(entries) - len(bad)}/{len(entries)} ground truths pass; failing: {bad[:5]}")
    return 1 if bad else 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
