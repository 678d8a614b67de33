"""Tool-call parsers: each template's own format, several calls, malformed calls as errors."""

from __future__ import annotations

import pytest

from rlvr.verifiers.tool_parsers import format_for_template, parse_tool_calls


def _calls(turn):
    return [(c.name, c.arguments) for c in turn.calls]


def test_hermes_several_calls_and_text_outside():
    text = ('Let me check.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
            '<tool_call>{"name": "g", "arguments": "{\\"b\\": [1, 2]}"}</tool_call><|im_end|>')
    turn = parse_tool_calls(text, "hermes")
    assert _calls(turn) == [("f", {"a": 1}), ("g", {"b": [1, 2]})]  # arguments as a JSON string too
    assert turn.content == "Let me check."


def test_hermes_malformed_json_is_an_error_not_an_exception():
    turn = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": </tool_call>', "hermes")
    assert len(turn.calls) == 1 and turn.calls[0].error and "not valid JSON" in turn.calls[0].error
    turn = parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>', "hermes")
    assert turn.calls[0].error == 'a tool call needs a "name" string'
    turn = parse_tool_calls('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "hermes")
    assert "must be an object" in turn.calls[0].error


def test_llama3_json_with_python_tag_and_semicolons():
    text = ('<|python_tag|>{"name": "f", "parameters": {"x": "a"}}; '
            '{"name": "g", "parameters": {}}<|eom_id|>')
    assert _calls(parse_tool_calls(text, "llama3_json")) == [("f", {"x": "a"}), ("g", {})]
    assert _calls(parse_tool_calls('{"name": "f", "parameters": {"x": 1}}', "llama3_json")) == \
        [("f", {"x": 1})]
    assert parse_tool_calls("The answer is 4.", "llama3_json").calls == []


def test_mistral_both_formats():
    v3 = '[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]</s>'
    assert _calls(parse_tool_calls(v3, "mistral")) == [("f", {"a": 1}), ("g", {})]
    v11 = '[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[ARGS]{"b": "x"}'
    assert _calls(parse_tool_calls(v11, "mistral")) == [("f", {"a": 1}), ("g", {"b": "x"})]
    bad = parse_tool_calls("[TOOL_CALLS]f[ARGS]{oops", "mistral")
    assert bad.calls[0].name == "f" and "not valid JSON" in bad.calls[0].error


def test_pythonic_and_json_fallbacks():
    turn = parse_tool_calls('[math.factorial(number=5), area(base=10, unit="m")]', "pythonic")
    assert _calls(turn) == [("math.factorial", {"number": 5}), ("area", {"base": 10, "unit": "m"})]
    assert parse_tool_calls("[f(1)]", "pythonic").calls[0].error.startswith("the arguments of f")
    assert _calls(parse_tool_calls('```json\n[{"name": "f", "arguments": {}}]\n```', "json")) == \
        [("f", {})]
    assert parse_tool_calls("plain answer", "json").calls == []


@pytest.mark.parametrize("text,expected", [
    ('<tool_call>{"name": "a", "arguments": {}}</tool_call>', [("a", {})]),
    ('[TOOL_CALLS][{"name": "b", "arguments": {}}]', [("b", {})]),
    ('<|python_tag|>{"name": "c", "parameters": {}}', [("c", {})]),
    ('{"name": "d", "arguments": {"k": 1}}', [("d", {"k": 1})]),
    ("[e(k=2)]", [("e", {"k": 2})]),
    ("Paris is the capital.", []),
])
def test_auto_picks_the_format_in_the_text(text, expected):
    assert _calls(parse_tool_calls(text)) == expected


def test_format_for_template():
    assert format_for_template("...<tool_call>...") == "hermes"
    assert format_for_template("...[TOOL_CALLS]...") == "mistral"
    assert format_for_template("...<|python_tag|>... ipython") == "llama3_json"
    assert format_for_template(None) == "hermes"


def test_unknown_parser_lists_known():
    with pytest.raises(KeyError, match="hermes, json, llama3_json, mistral, pythonic"):
        parse_tool_calls("x", "xml")
