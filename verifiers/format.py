"""Format verifiers: R1's think/answer template, the Search-R1 tag grammar, language consistency.

Weights are configurable through the task's ``info`` (the channel every verifier receives):
``info["format_weights"]`` maps a part name to its weight and the reward is the weighted mean of the
parts, so the default (only the strict check weighted) is a plain 0/1 reward.

All parsing is one left-to-right scan over the tag occurrences: linear in the text, whatever the
nesting, with no backtracking regex over the completion.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from rlvr.core.registry import verifier
from rlvr.core.types import Score
from rlvr.verifiers.extract import last_tag

_TAG = re.compile(r"<(/?)(think|search|information|answer)>")
# Special tokens a decoder may leave after the final tag (skip_special_tokens=False).
_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^<>|\n]{1,40}\|>|</s>|<eos>|<end_of_turn>))+\s*\Z")


def _weighted(parts: dict[str, float], defaults: dict[str, float], info: dict) -> float:
    weights = dict(defaults)
    given = info.get("format_weights")
    if isinstance(given, dict):
        weights.update({k: float(v) for k, v in given.items() if k in parts
                        and isinstance(v, (int, float))})
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return 0.0
    return sum(max(w, 0.0) * parts[k] for k, w in weights.items()) / total


def _strip_trailing_special(text: str) -> str:
    tail = text[-400:]
    m = _TRAILING_SPECIAL.search(tail)
    return text[: len(text) - len(tail) + m.start()] if m else text


def _blocks(text: str) -> tuple[list[str] | None, str]:
    """The sequence of closed tag blocks, in order, or (None, why) when the text breaks the
    grammar: text outside blocks, unclosed or nested tags. Inside ``<information>`` (retrieved
    documents, written by the environment) tag-like text is ignored."""
    seq: list[str] = []
    open_tag: str | None = None
    pos = 0
    for m in _TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if open_tag == "information" and not (closing and name == "information"):
            continue
        if open_tag is None:
            if text[pos:m.start()].strip():
                return None, f"text outside tags before <{'/' if closing else ''}{name}>"
            if closing:
                return None, f"</{name}> without an opening tag"
            open_tag = name
        else:
            if not closing or name != open_tag:
                return None, f"<{'/' if closing else ''}{name}> inside <{open_tag}>"
            seq.append(name)
            open_tag = None
        pos = m.end()
    if open_tag is not None:
        return None, f"<{open_tag}> is never closed"
    if text[pos:].strip():
        return None, "text after the last tag" if seq else "no tagged blocks"
    return seq, ""


def _checked_text(completion: Any, info: dict) -> str | None:
    """The text the format checks read (None when the completion is not text)."""
    if not isinstance(completion, str):
        return None
    text = _strip_trailing_special(completion)
    # the prompt already opened <think> (R1-Zero's template)
    return "<think>" + text if info.get("think_in_prompt") else text


@verifier("format_r1")
def format_r1(completion: str, answer: Any = None, **info: Any) -> Score:
    """R1 template: <think>...</think> then <answer>...</answer> and nothing else (weights in info)."""
    text = _checked_text(completion, info)
    if text is None:
        return Score(0.0, False, reason=f"completion is {type(completion).__name__}, not text")
    counts = {t: text.count(t) for t in ("<think>", "</think>", "<answer>", "</answer>")}
    tags = sum(1.0 for c in counts.values() if c == 1) / 4  # each tag exactly once: 0.25
    seq, why = _blocks(text)
    template = float(seq == ["think", "answer"])
    if seq is not None and not template:
        why = f"blocks {seq[:6]} are not think, answer"
    parts = {"template": template, "tags": tags}
    reward = _weighted(parts, {"template": 1.0, "tags": 0.0}, info)
    return Score(reward, bool(template), parts, "" if template else why)


def _search_r1_valid(seq: list[str]) -> tuple[bool, str]:
    # think → (search → information → [think]) * → answer; Search-R1 additionally requires a
    # think before the answer, which the transition table below enforces.
    allowed = {"start": {"think"}, "think": {"search", "answer"}, "search": {"information"},
               "information": {"think", "search"}, "answer": set()}
    state = "start"
    for block in seq:
        if block not in allowed[state]:
            return False, f"<{block}> after {state}"
        state = block
    if state != "answer":
        return False, "the response does not end with <answer>"
    return True, ""


@verifier("format_search")
def format_search(completion: str, answer: Any = None, **info: Any) -> Score:
    """Search-R1 tag grammar: think, (search, information, think)*, answer (weights in info)."""
    text = _checked_text(completion, info)
    if text is None:
        return Score(0.0, False, reason=f"completion is {type(completion).__name__}, not text")
    seq, why = _blocks(text)
    valid = False
    if seq is not None:
        valid, why = _search_r1_valid(seq)
    answer_tag = float(last_tag(text, "answer") is not None)
    parts = {"sequence": float(valid), "answer_tag": answer_tag}
    reward = _weighted(parts, {"sequence": 1.0, "answer_tag": 0.0}, info)
    return Score(reward, valid, parts, "" if valid else why)


# language code → the Unicode script names (first word of a character's name) that count as it
_SCRIPTS = {
    "zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL",),
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "bg": ("CYRILLIC",), "el": ("GREEK",),
    "ar": ("ARABIC",), "fa": ("ARABIC",), "he": ("HEBREW",), "hi": ("DEVANAGARI",),
    "th": ("THAI",),
}
#: Letters examined at most: the share is a statistic, and a sample bounds the cost on huge text.
MAX_LETTERS = 20_000


def _script(c: str) -> str:
    name = unicodedata.name(c, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


@verifier("language")
def language(completion: str, answer: Any = None, **info: Any) -> Score:
    """Language consistency (R1): share of the answer's letters in the target language's script."""
    if not isinstance(completion, str):
        return Score(0.0, None, reason=f"completion is {type(completion).__name__}, not text")
    target = str(info.get("language", "en")).lower().split("-")[0]
    scripts = _SCRIPTS.get(target, ("LATIN",))  # every other language code: Latin script
    text = last_tag(completion, "answer")
    if text is None:  # no answer block: judge the whole response without its tags
        text = _TAG.sub(" ", completion)
    letters = 0
    inside = 0
    for c in text:
        if c.isalpha():
            letters += 1
            inside += _script(c) in scripts
            if letters >= MAX_LETTERS:
                break
    if not text.strip():
        return Score(0.0, None, reason="empty answer")
    if letters == 0:
        return Score(1.0, None, reason="no letters: nothing in a wrong script")
    share = inside / letters
    return Score(share, None, {"share": share},
                 f"{inside}/{letters} letters in {'/'.join(scripts)} ({target})")
