"""Format verifiers: R1 template, Search-R1 grammar, language consistency."""

import pytest

from rlvr.core.scoring import verify

R1 = [
    ("<think>reason</think><answer>4</answer>", 1.0),
    ("<think>reason</think>\n<answer>4</answer><|im_end|>", 1.0),    # trailing special token ok
    ("<answer>4</answer>", 0.0),                                       # no think
    ("<think>a</think><answer>4</answer> extra", 0.0),                 # text after the answer
    ("preamble <think>a</think><answer>4</answer>", 0.0),
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0),      # two think blocks
    ("<think>a<answer>4</answer></think>", 0.0),                       # nested
    ("<think>a</think><answer>4", 0.0),                                # unclosed
    ("", 0.0),
]


@pytest.mark.parametrize("text,expected", R1)
def test_format_r1(text, expected):
    assert verify("format_r1", text, None).reward == expected


def test_format_r1_tag_part_and_weights():
    # "<think>a</think><answer>4" has <think>, </think>, <answer> once each and no </answer>:
    # tags = 3/4; with weights template 1, tags 1 the reward is (0 + 0.75) / 2 = 0.375
    s = verify("format_r1", "<think>a</think><answer>4", None,
               format_weights={"template": 1.0, "tags": 1.0})
    assert s.parts == {"template": 0.0, "tags": 0.75}
    assert s.reward == pytest.approx(0.375)


def test_format_r1_think_in_prompt():
    assert verify("format_r1", "a</think><answer>4</answer>", None, think_in_prompt=True).reward == 1.0


SEARCH = [
    ("<think>a</think><answer>x</answer>", 1.0),
    ("<think>a</think><search>q</search><information>d</information>"
     "<think>b</think><answer>x</answer>", 1.0),
    ("<think>a</think><search>q1</search><information>d</information>"
     "<search>q2</search><information>d</information><think>b</think><answer>x</answer>", 1.0),
    # retrieved text may hold tag-like strings: ignored inside <information>
    ("<think>a</think><search>q</search><information><answer>y</answer></information>"
     "<think>b</think><answer>x</answer>", 1.0),
    ("<think>a</think><search>q</search><think>b</think><answer>x</answer>", 0.0),   # no info
    ("<think>a</think><search>q</search><information>d</information><answer>x</answer>", 0.0),
    ("<search>q</search><information>d</information><think>b</think><answer>x</answer>", 0.0),
    ("<think>a</think><search>q</search><information>d</information>", 0.0),     # no answer
    ("<think>a</think>stray text<answer>x</answer>", 0.0),
]


@pytest.mark.parametrize("text,expected", SEARCH)
def test_format_search(text, expected):
    assert verify("format_search", text, None).reward == expected


def test_format_search_answer_tag_weight():
    # invalid sequence but a closed answer: weights 1 and 1 → (0 + 1) / 2 = 0.5
    s = verify("format_search", "<answer>x</answer>", None,
               format_weights={"sequence": 1.0, "answer_tag": 1.0})
    assert s.reward == pytest.approx(0.5)


@pytest.mark.parametrize("text,lang,expected", [
    ("<answer>Paris</answer>", "en", 1.0),
    ("<answer>巴黎</answer>", "zh", 1.0),
    ("<answer>巴黎 Paris</answer>", "zh", 2 / 7),     # 2 Han letters of 7 letters
    ("<answer>Москва</answer>", "en", 0.0),
    ("<answer>Москва city</answer>", "ru", 6 / 10),  # 6 Cyrillic of 10 letters
    ("<answer>42</answer>", "en", 1.0),              # no letters: nothing in a wrong script
    ("<answer> </answer>", "en", 0.0),               # empty answer
    ("<think>x</think> Hello", "en", 1.0),           # no answer block: whole text, tags dropped
])
def test_language(text, lang, expected):
    assert verify("language", text, None, language=lang).reward == pytest.approx(expected)
