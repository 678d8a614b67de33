"""BFCL multi_turn_base: its own ground truth passes the turn checks, broken versions fail, and
calls cannot reach anything but the API instances' public methods."""

from __future__ import annotations

import importlib.util
import time

import pytest

if importlib.util.find_spec("bfcl_eval") is None:
    pytest.skip("bfcl_eval is not installed (pip install --no-deps bfcl-eval)",
                allow_module_level=True)

from rlvr.environments.bfcl_executor import (World, check, function_docs,  # noqa: E402
                                             load_entries, missing_results, parse_call)


@pytest.fixture(scope="module")
def entries():
    return load_entries()


def test_every_ground_truth_passes(entries):
    assert len(entries) == 200
    failing = [(e["id"], s.reason) for e in entries if not (s := check(e["ground_truth"], e)).correct]
    assert failing == []


def test_dropping_each_turns_last_call_fails_every_test(entries):
    passed = [e["id"] for e in entries if check([t[:-1] for t in e["ground_truth"]], e).correct]
    assert passed == []


def _perturbed(turn: list[str]) -> list:
    """Every string argument gets a suffix, every number +7; calls with positional arguments kept."""
    out = []
    for c in turn:
        name, args, kwargs = parse_call(c)
        if args:
            out.append(c)
            continue
        out.append((name, {k: v + "_x" if isinstance(v, str) else
                           v + 7 if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                           for k, v in kwargs.items()}))
    return out


def test_wrong_argument_values_fail(entries):
    scores = [check([_perturbed(t) for t in e["ground_truth"]], e) for e in entries]
    assert sum(s.correct for s in scores) <= 2  # tests whose arguments are all booleans survive
    reasons = " ".join(s.reason for s in scores)
    assert "state check" in reasons and "response check" in reasons


def test_state_check_is_per_turn_and_names_the_turn(entries):
    e = next(x for x in entries if x["id"] == "multi_turn_base_1")
    # right first turn, then only reads: the move of turn 1 is missing from the file system
    s = check([e["ground_truth"][0]] + [["ls(a=True)"]] * 3, e)
    assert not s.correct and s.reason.startswith("turn 1: state check: GorillaFileSystem")
    assert s.parts["turns_passed"] == 1.0
    assert "turns of calls" in check(e["ground_truth"][:2], e).reason


def test_response_check_is_a_multiset_over_all_turns_so_far():
    assert missing_results(["a", "b"], ["b", "a"]) == []
    assert missing_results(["a"], ["a", "a"]) == ["a"]


def test_calls_are_parsed_not_evaluated(entries):
    w = World(entries[0])
    out = w.run(["cd(folder='document')", "__import__('os')", "_load_scenario({})",
                 "cd(folder=open('x'))", "cd(folder='a', b=2)", "rm -rf /", "sort('final_report.pdf')"])
    assert out[0] == '{"current_working_directory": "document"}'
    assert "no such function: __import__" in out[1] and "no such function: _load_scenario" in out[2]
    assert "not literals" in out[3] and "unexpected keyword argument 'b'" in out[4]
    assert "not a function call" in out[5]
    assert out[6].startswith('{"sorted_content": "Year2024')  # positional, as BFCL's answers write
    # (name, arguments) as a tool parser gives them, and a class-qualified doc name
    assert w.call(("GorillaFileSystem.pwd", {})) == '{"current_working_directory": "/workspace/document"}'


def test_a_call_that_hangs_times_out(entries):
    w = World(entries[0], timeout_s=0.05)
    w.methods["pwd"] = lambda: time.sleep(2)
    assert "timed out after 0.05 s" in w.call("pwd()")


def test_function_docs_leave_out_excluded_functions(entries):
    e = entries[0]  # GorillaFileSystem without cp, and TwitterAPI
    names = {d["name"] for d in function_docs(e)}
    assert "cp" not in names and {"mv", "post_tweet"} <= names
