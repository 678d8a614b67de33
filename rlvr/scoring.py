"""Calling verifiers: one safely, several combined with weights.

Verifiers never raise on model output; this module makes sure that holds even for a plugin that
does: an exception becomes ``Score(0.0, False, reason=...)``.
"""

from __future__ import annotations

from typing import Any

from rlvr.registry import VERIFIERS
from rlvr.types import Score


def verify(name: str, completion: str, answer: Any, **info: Any) -> Score:
    """Run the verifier ``name``; a raising verifier scores 0 with the error as its reason."""
    fn = VERIFIERS.get(name)
    try:
        score = fn(completion, answer, **info)
    except Exception as e:  # untrusted output must never crash training
        return Score(0.0, False, reason=f"verifier {name!r} raised {type(e).__name__}: {e}")
    if not isinstance(score, Score):
        return Score(0.0, False, reason=f"verifier {name!r} returned {type(score).__name__}, not Score")
    return score


def combine(weights: dict[str, float], completion: str, answer: Any, **info: Any) -> Score:
    """Weighted sum of several verifiers. ``parts`` keeps each one's reward; ``correct`` is the
    first verifier's verdict (by convention the accuracy verifier comes first)."""
    if not weights:
        raise ValueError("no verifiers named: give at least one name → weight")
    total, parts, reasons, correct = 0.0, {}, [], None
    for i, (name, w) in enumerate(weights.items()):
        s = verify(name, completion, answer, **info)
        total += w * s.reward
        parts[name] = s.reward
        if i == 0:
            correct = s.correct
        if s.reason:
            reasons.append(f"{name}: {s.reason}")
    return Score(total, correct, parts, "; ".join(reasons))
