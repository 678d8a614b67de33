"""The bfcl verifier: BFCL's own ground truths score 100 %, systematically broken ones 0 %."""

from __future__ import annotations

import copy
import json

import pytest

from rlvr.core.scoring import verify
from rlvr.verifiers.bfcl import bfcl, oracle_calls, standardize, unsatisfiable

FACTORIAL = {"name": "math.factorial", "description": "n!", "parameters": {
    "type": "dict", "properties": {"number": {"type": "integer"}}, "required": ["number"]}}
AREA = {"name": "area", "description": "triangle area", "parameters": {"type": "dict", "properties": {
    "base": {"type": "float"}, "unit": {"type": "string"},
    "dims": {"type": "array", "items": {"type": "integer"}}}, "required": ["base"]}}


def _hermes(calls: list[dict]) -> str:
    return "".join(f"<tool_call>{json.dumps(c)}</tool_call>" for c in calls) + "<|im_end|>"


def _score(calls, answer, functions, category):
    return bfcl(_hermes(calls) if isinstance(calls, list) else calls, answer,
                functions=functions, category=category)


@pytest.mark.parametrize("calls,ok,reason", [
    ([{"name": "area", "arguments": {"base": 10}}], True, ""),  # int for float, unit omitted
    ([{"name": "area", "arguments": {"base": 10.0, "unit": "Square Meters"}}], True, ""),  # normalised
    ([{"name": "area_v2", "arguments": {"base": 10}}], False, "wrong function"),
    ([{"name": "area", "arguments": {"unit": "m"}}], False, "missing required parameter 'base'"),
    ([{"name": "area", "arguments": {"base": 11}}], False, "value not allowed for 'base'"),
    ([{"name": "area", "arguments": {"base": "10"}}], False, "type mismatch for 'base'"),
    # an item of the wrong type: BFCL accepts the list type and rejects the value
    ([{"name": "area", "arguments": {"base": 10, "dims": [1, "2"]}}], False, "value not allowed for 'dims'"),
    ([{"name": "area", "arguments": {"base": 10, "dims": "1, 2"}}], False, "type mismatch for 'dims'"),
    ([{"name": "area", "arguments": {"base": 10, "color": "red"}}], False, "unexpected parameter"),
    ([{"name": "area", "arguments": {"base": 10}}] * 2, False, "wrong number of calls"),
    ("<tool_call>{\"name\": \"area\", \"arguments\": {</tool_call>", False, "malformed call"),
    ("The area is 25.", False, "no function call"),
])
def test_simple_rules(calls, ok, reason):
    answer = [{"area": {"base": [10], "unit": ["square_meters", ""], "dims": [[1, 2], ""]}}]
    s = _score(calls, answer, [AREA], "simple_python")
    assert s.correct is ok and s.reward == float(ok) and reason in s.reason


def test_parallel_matches_in_any_order_and_dotted_names_may_use_underscores():
    answer = [{"math.factorial": {"number": [5]}}, {"math.factorial": {"number": [7]}}]
    calls = [{"name": "math_factorial", "arguments": {"number": 7}},
             {"name": "math.factorial", "arguments": {"number": 5}}]
    assert _score(calls, answer, [FACTORIAL], "parallel").correct
    calls[0]["arguments"]["number"] = 5  # two calls for 5, none for 7
    assert not _score(calls, answer, [FACTORIAL], "parallel").correct


def test_irrelevance_and_bad_answers():
    assert bfcl("I cannot help with that.", [], functions=[AREA], category="irrelevance").correct
    s = _score([{"name": "area", "arguments": {"base": 1}}], [], [AREA], "irrelevance")
    assert not s.correct and "calls area" in s.reason
    assert "list of calls" in bfcl("x", "oops", category="simple_python").reason
    assert verify("bfcl", _hermes([{"name": "math.factorial", "arguments": {"number": 5}}]),
                  [{"math.factorial": {"number": [5]}}], functions=[FACTORIAL]).correct


def test_standardize_follows_bfcl():
    assert standardize("New York, NY") == standardize("new_york ny") == "newyorkny"
    assert standardize("'a'") == '"a"'


# -- BFCL's own data (skipped when bfcl-eval is not installed) ------------------------------------

CATEGORIES = ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple",
              "live_multiple", "live_parallel", "live_parallel_multiple", "irrelevance"]


def _tasks(category):
    from rlvr.data import bfcl as bfcl_data

    try:
        bfcl_data.data_dir()
    except FileNotFoundError:
        pytest.skip("bfcl-eval is not installed (pip install --no-deps bfcl-eval)")
    return bfcl_data.load_category(category)


def _broken(answer: list[dict], functions: list[dict]):
    """(kind, calls) variants of the oracle calls, each of which BFCL's rules reject."""
    calls = oracle_calls(answer, functions)
    yield "wrong number of calls", calls + calls[:1]
    c = copy.deepcopy(calls)
    c[0]["name"] += "_x"
    yield "wrong function", c
    doc = next(f for f in functions if f["name"] == calls[0]["name"])
    required = [r for r in doc["parameters"].get("required", []) if r in calls[0]["arguments"]]
    if required:
        c = copy.deepcopy(calls)
        del c[0]["arguments"][required[0]]
        yield "missing required parameter", c
    for key, value in calls[0]["arguments"].items():
        c = copy.deepcopy(calls)
        if isinstance(value, str):
            c[0]["arguments"][key] = 12345  # a number where a string is documented
            yield "type mismatch", c
            c = copy.deepcopy(calls)
            c[0]["arguments"][key] = value + " zzqx"
            yield "value not allowed", c
            return
        if isinstance(value, int) and not isinstance(value, bool):
            c[0]["arguments"][key] = "zzqx"
            yield "type mismatch", c
            return


@pytest.mark.parametrize("category", CATEGORIES)
def test_bfcl_ground_truths_score_100_and_broken_ones_0(category):
    tasks = _tasks(category)
    assert tasks
    broken_kinds: dict[str, int] = {}
    defects: list[str] = []
    for t in tasks:
        info = t.info
        if category == "irrelevance":
            assert bfcl("I cannot answer that with these functions.", t.answer, **info).correct
            fn = info["functions"][0]
            assert not bfcl(_hermes([{"name": fn["name"], "arguments": {}}]), t.answer, **info).correct
            continue
        if unsatisfiable(t.answer, info["functions"]):
            defects.append(t.id)  # BFCL's own checker fails every model on these rows too
            continue
        s = bfcl(_hermes(oracle_calls(t.answer, info["functions"])), t.answer, **info)
        assert s.correct, f"{t.id}: the ground truth itself scored 0 ({s.reason})"
        for kind, calls in _broken(t.answer, info["functions"]):
            s = bfcl(_hermes(calls), t.answer, **info)
            assert not s.correct, f"{t.id}: broken ({kind}) still scored 1"
            broken_kinds[kind] = broken_kinds.get(kind, 0) + 1
    if category != "irrelevance":
        assert {"wrong number of calls", "wrong function"} <= set(broken_kinds)
    assert len(defects) <= 0.01 * len(tasks), defects  # a handful of rows at most


def test_training_split_is_never_evaluated():
    train, test = _tasks("live_multiple:train"), _tasks("live_multiple")
    assert len(train) == 800 and len(test) == 253
    assert not {t.info["bfcl_id"] for t in train} & {t.info["bfcl_id"] for t in test}


def test_eval_reports_accuracy_per_category(tmp_path, monkeypatch):
    """`rlvr eval --env bfcl` through the real episode loop, with an engine that answers each
    test with its ground truth (all correct) except irrelevance, where it calls a function."""
    import argparse

    from rlvr.core.models import build_tiny_tokenizer
    from rlvr.eval import bfcl as bfcl_eval
    from rlvr.testing import ScriptedEngine

    tasks = {c: _tasks(c)[:3] for c in ("simple_python", "parallel", "irrelevance")}
    by_question = {t.prompt[-1]["content"]: t for ts in tasks.values() for t in ts}
    tok = build_tiny_tokenizer()

    def policy(ctx):
        task = next(t for q, t in by_question.items() if q in ctx)
        if task.info["category"] == "irrelevance":
            return _hermes([{"name": task.info["functions"][0]["name"], "arguments": {}}])
        return _hermes(oracle_calls(task.answer, task.info["functions"]))

    monkeypatch.setattr(bfcl_eval, "load_policy", lambda *a, **k: (None, tok))
    monkeypatch.setattr(bfcl_eval, "make_engine", lambda *a, **k: ScriptedEngine(tok, policy))
    args = argparse.Namespace(
        model="scripted", data="simple_python,parallel,irrelevance", limit=3, index=None,
        retriever=None, output_dir=str(tmp_path), batch_size=2, max_new_tokens=2000,
        max_total_tokens=20000, max_obs_tokens=100, device="cpu", dtype="float32", engine="hf",
        overwrite=False, no_progress=True)
    assert bfcl_eval.run_bfcl(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    acc = {c: m["accuracy"] for c, m in report["categories"].items()}
    assert acc == {"simple_python": 1.0, "parallel": 1.0, "irrelevance": 0.0}
    assert report["overall"]["accuracy"] == pytest.approx(2 / 3)
    assert "simple_python" in (tmp_path / "results.txt").read_text()
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and all("calls" in r["reason"] for r in rows if r["category"] == "irrelevance")
