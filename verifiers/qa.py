"""Question-answering verifiers: SQuAD-normalised exact match, token F1 and cover exact match.

They run in-process on every trajectory of the training loop, so they are plain string work:
no regex over the whole response, no subprocess. The predicted answer is the content of the LAST
``<answer>…</answer>`` of the response (the text after the prompt): Search-R1 responses hold
``<think>``, ``<search>`` and ``<information>`` blocks before it, and an ``<answer>`` in the
prompt's instructions must never count, so callers pass the response only.

Deliberate deviations from SQuAD's evaluation script (``normalize_answer``, ``exact_match_score``,
``f1_score``):

- Unicode punctuation (``“”«»¿—``) is removed like ASCII punctuation.
- ``qa_cover_em`` matches whole tokens (gold ``"1"`` is not covered by ``"1990"``), where
  Search-R1's ``subem`` tests raw substrings.
- Gold answers that normalise to nothing (``"The"``, ``"A"``, ``"..."``) are dropped, and a row left
  with no gold scores 0 with the reason "no reference answer". SQuAD compares the two empty strings
  and gives exact match 1 (and, in the v2 script, F1 1) to an empty prediction such as
  ``<answer>the</answer>`` or ``<answer></answer>``; in RL that would reward the policy for
  answering nothing. The task loaders refuse such rows up front (:func:`reference_problem`).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any, Callable

from rlvr.core.registry import verifier
from rlvr.core.types import Score
from rlvr.verifiers.extract import golds, last_tag

_ASCII_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _strip_punct(s: str) -> str:
    if s.isascii():
        return s.translate(_ASCII_PUNCT)
    return "".join(c for c in s.translate(_ASCII_PUNCT) if not unicodedata.category(c).startswith("P"))


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation, drop articles a/an/the, collapse spaces."""
    s = _strip_punct(str(s).lower())
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def extract_answer(response: str) -> str | None:
    """The content of the last ``<answer>…</answer>`` of a response, or None when there is none."""
    return last_tag(response, "answer")


def em(prediction: str, gold: str) -> bool:
    """Exact match after normalisation."""
    return normalize_answer(prediction) == normalize_answer(gold)


def f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 after normalisation (0 when either side normalises to nothing)."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def cover_em(prediction: str, gold: str) -> bool:
    """The normalised gold appears in the normalised prediction as whole tokens."""
    g = normalize_answer(gold)
    return bool(g) and f" {g} " in f" {normalize_answer(prediction)} "


def reference_problem(answer: Any) -> str:
    """Why the QA verifiers can never reward a completion against ``answer``; "" when they can.
    Task loaders call it (through ``check_answer``) to refuse such rows before training."""
    refs = golds(answer)
    if not refs:
        if isinstance(answer, dict):
            return (f"the answer is an object without 'target', 'answers', 'golden_answers' or "
                    f"'answer' (keys: {sorted(map(str, answer))[:5]})")
        return f"the answer ({type(answer).__name__} {answer!r:.60}) holds no gold text"
    if not any(normalize_answer(g) for g in refs):
        return (f"every gold answer ({refs[:3]!r}) normalises to nothing under SQuAD "
                f"normalisation (articles and punctuation are dropped)")
    return ""


def _prediction(completion: Any, answer: Any, info: dict) -> tuple[str | None, list[str], str]:
    """(predicted answer, gold answers, reason when unusable)."""
    if not isinstance(completion, str):
        return None, [], f"completion is {type(completion).__name__}, not text"
    refs = [g for g in golds(answer) if normalize_answer(g)]
    if not refs:
        return None, [], "no reference answer"
    # info["require_answer_tag"] = False scores the whole response when it has no <answer> tag
    # (plain-text QA evaluation); training keeps the tag required, so format is not free.
    pred = extract_answer(completion)
    if pred is None:
        if info.get("require_answer_tag", True):
            return None, refs, "no <answer>...</answer> in the response"
        pred = completion
    return pred, refs, ""


def _any_gold(completion: str, answer: Any, info: dict, match: Callable[[str, str], bool],
              none_verb: str, hit_verb: str) -> Score:
    """1 when ``match(prediction, gold)`` holds for some gold answer, naming it."""
    pred, refs, why = _prediction(completion, answer, info)
    if pred is None:
        return Score(0.0, False, reason=why)
    hit = next((g for g in refs if match(pred, g)), None)
    if hit is None:
        return Score(0.0, False, reason=f"{pred[:80]!r} {none_verb} none of {refs[:3]!r}")
    return Score(1.0, True, reason=f"{hit_verb} {hit!r}")


@verifier("qa_em", check_answer=reference_problem)
def qa_em(completion: str, answer: Any, **info: Any) -> Score:
    """Exact match of the last <answer> with any gold answer after SQuAD normalisation."""
    return _any_gold(completion, answer, info, em, "matches", "matched")


@verifier("qa_f1", check_answer=reference_problem)
def qa_f1(completion: str, answer: Any, **info: Any) -> Score:
    """Token F1 of the last <answer> against the best gold answer (SQuAD normalisation)."""
    pred, refs, why = _prediction(completion, answer, info)
    if pred is None:
        return Score(0.0, False, reason=why)
    best = max(f1(pred, g) for g in refs)
    exact = any(em(pred, g) for g in refs)
    return Score(best, exact, reason=f"F1 {best:.3f} of {pred[:80]!r}")


@verifier("qa_cover_em", check_answer=reference_problem)
def qa_cover_em(completion: str, answer: Any, **info: Any) -> Score:
    """A gold answer appears (as whole tokens) in the last <answer>, after SQuAD normalisation."""
    return _any_gold(completion, answer, info, cover_em, "covers", "covers")
