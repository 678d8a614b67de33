"""Final-answer extraction shared by the verifiers: ``<answer>`` tags, ``\\boxed{}``, GSM8K ``####``.

Every function here runs on untrusted model output, so each is linear (or bounded) in the length
of the text: no backtracking regex over the whole completion, a cap on how many candidates are
examined, and ``None`` (never an exception) when nothing is found.
"""

from __future__ import annotations

import re

#: How many trailing ``\boxed`` candidates are examined before giving up (adversarial text may
#: hold thousands of unbalanced ones; each examination is linear in the text).
MAX_BOXED_CANDIDATES = 16
#: How far past ``\boxed{`` a closing brace is searched for.
MAX_BOXED_CHARS = 20_000

_GSM8K_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def last_tag(text: str, tag: str) -> str | None:
    """Content of the last complete ``<tag>…</tag>`` in ``text`` (stripped), or None.

    The last closing tag is found first and then the nearest opening tag before it, so
    ``<answer>x<answer>y</answer>`` gives ``y`` and an unclosed trailing ``<answer>`` is ignored.
    """
    if not isinstance(text, str):
        return None
    close = text.rfind(f"</{tag}>")
    if close < 0:
        return None
    opener = f"<{tag}>"
    start = text.rfind(opener, 0, close)
    if start < 0:
        return None
    return text[start + len(opener):close].strip()


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{…}`` (or ``\\fbox{…}``), nested braces kept.

    ``\\boxed 5`` (the brace-less form) is accepted too. An unbalanced last box falls back to the
    one before it.
    """
    if not isinstance(text, str):
        return None
    positions = []
    for key in ("\\boxed", "\\fbox"):
        end = len(text)
        while len(positions) < 2 * MAX_BOXED_CANDIDATES:
            i = text.rfind(key, 0, end)
            if i < 0:
                break
            positions.append((i, i + len(key)))
            end = i
    for _, after in sorted(positions, reverse=True)[:MAX_BOXED_CANDIDATES]:
        content = _braced_or_token(text, after)
        if content is not None:
            return content.strip()
    return None


def _braced_or_token(text: str, i: int) -> str | None:
    if i < len(text) and text[i] == " ":
        # "\boxed 5": the brace-less form takes one token up to whitespace or "$"
        m = re.match(r" +([^\s$]+)", text[i:i + 200])
        return m.group(1) if m else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    stop = min(len(text), i + MAX_BOXED_CHARS)
    for j in range(i, stop):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


def gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K's answer marker), commas and ``$`` dropped."""
    if not isinstance(text, str):
        return None
    i = text.rfind("####")
    if i < 0:
        return None
    line = text[i + 4:i + 4 + 200].split("\n", 1)[0].strip()
    m = _GSM8K_NUMBER.search(line.replace("$", ""))
    if m is None:
        return line or None
    return m.group(0).replace(",", "")


def final_math_answer(text: str) -> tuple[str | None, str]:
    """The final answer of a math completion and where it came from.

    Order: the last ``<answer>`` (with a ``\\boxed{}`` inside it preferred), then the last
    ``\\boxed{}`` anywhere, then GSM8K's ``####``. Returns ``(answer, source)``, ``(None, "")`` when
    the completion states no final answer.
    """
    tagged = last_tag(text, "answer")
    if tagged is not None:
        inner = last_boxed(tagged)
        return (inner, "answer+boxed") if inner is not None else (tagged, "answer")
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    hashed = gsm8k_answer(text)
    if hashed is not None:
        return hashed, "####"
    return None, ""


def golds(answer) -> list[str]:
    """A reference answer as a list of strings: a string, a number, a list of either, or a dict
    holding one under ``target`` / ``answers`` / ``golden_answers`` (Search-R1 / NQ layouts)."""
    if answer is None:
        return []
    if isinstance(answer, dict):
        for key in ("target", "answers", "golden_answers", "answer"):
            if key in answer:
                return golds(answer[key])
        return []
    if isinstance(answer, (list, tuple, set, frozenset)):
        out: list[str] = []
        for a in answer:
            out.extend(golds(a))
        return out
    if isinstance(answer, bool):
        return [str(answer).lower()]
    if isinstance(answer, float) and answer.is_integer():
        return [str(int(answer))]
    return [str(answer)]
