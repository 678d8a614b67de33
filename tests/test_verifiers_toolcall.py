"""ToolRL tool-call rewards, partial credit worked by hand."""

import json

import pytest

from rlvr.core.scoring import verify
from rlvr.verifiers.tool_call import correctness, parse_calls


def call(name, **params):
    return {"name": name, "parameters": params}


def completion(*calls):
    body = "\n".join(json.dumps(c) for c in calls)
    return f"<think>plan</think><tool_call>\n{body}\n</tool_call>"


GOLD = [call("search", query="paris", k=3)]


def test_exact_match_scores_max():
    # r_name 1 + IoU 1 + values 2 = 4 = S_max (1 + 1 call + 2 params) → 6·4/4 − 3 = 3; + format 1
    s = verify("tool_call", completion(call("search", query="paris", k=3)), GOLD)
    assert s.parts == {"format": 1.0, "correctness": 3.0} and s.reward == 4.0 and s.correct


def test_one_wrong_value():
    # r = 1 + 1 + 1 = 3 of 4 → 6·3/4 − 3 = 1.5
    s = verify("tool_call", completion(call("search", query="lyon", k=3)), GOLD)
    assert s.parts["correctness"] == pytest.approx(1.5) and s.correct is False


def test_missing_and_extra_parameter():
    # pred params {query, lang}: IoU = |{query}| / |{query, k, lang}| = 1/3; values: query = 1
    # r = 1 + 1/3 + 1 = 7/3 → 6·(7/3)/4 − 3 = 0.5
    s = verify("tool_call", completion(call("search", query="paris", lang="en")), GOLD)
    assert s.parts["correctness"] == pytest.approx(0.5)


def test_wrong_tool():
    # names {search} vs {lookup}: IoU 0; no pair credit for other names → r = 0 → −3
    s = verify("tool_call", completion(call("lookup", query="paris", k=3)), GOLD)
    assert s.parts["correctness"] == pytest.approx(-3.0)


def test_two_gold_calls_one_predicted():
    gold = [call("a", x=1), call("b", y=2)]
    # S_max = 1 + 2 + 2 = 5. names: |{a}| / |{a, b}| = 1/2; a pair: IoU 1 + value 1 = 2
    # r = 0.5 + 2 = 2.5 → 6·2.5/5 − 3 = 0
    assert correctness(gold, parse_calls([call("a", x=1)])) == pytest.approx(0.0)
    # order of predicted calls does not matter: the best pairing is found
    assert correctness(gold, [call("b", y=2), call("a", x=1)]) == pytest.approx(3.0)


def test_no_call_expected():
    # gold [] and no call: names union empty → r_name 1, S_max 1 → 3
    s = verify("tool_call", "<think>t</think><response>Hi</response>", [])
    assert s.parts == {"format": 1.0, "correctness": 3.0}
    # a call when none is expected: r_name 0 → −3
    s = verify("tool_call", completion(call("a")), [])
    assert s.parts["correctness"] == -3.0


def test_format_part():
    no_think = '<tool_call>{"name": "search", "parameters": {"query": "paris", "k": 3}}</tool_call>'
    s = verify("tool_call", no_think, GOLD)
    assert s.parts == {"format": 0.0, "correctness": 3.0} and s.reward == 3.0
    broken = "<think>t</think><tool_call>{not json</tool_call>"
    s = verify("tool_call", broken, GOLD)
    assert s.parts == {"format": 0.0, "correctness": -3.0} and "parse" in s.reason


def test_gold_as_json_text_and_arguments_key():
    gold = json.dumps([{"name": "f", "arguments": {"a": True}}])
    # JSON true is not 1: value credit 0 → r = 1 + 1 + 0 = 2 of 3 → 6·2/3 − 3 = 1
    s = verify("tool_call", completion(call("f", a=1)), gold)
    assert s.parts["correctness"] == pytest.approx(1.0)


def test_tool_call_em_is_coarse():
    assert verify("tool_call_em", completion(call("search", query="paris", k=3)), GOLD).reward == 4.0
    s = verify("tool_call_em", completion(call("search", query="paris", k=4)), GOLD)
    assert s.parts == {"format": 1.0, "correctness": -3.0}


def test_bad_gold_is_reported():
    s = verify("tool_call", completion(call("a")), "not json at all")
    assert s.reward == -3.0 and "gold" in s.reason
