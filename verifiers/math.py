"""The ``math`` verifier: final-answer extraction, then equivalence through math-verify (sympy).

math-verify bounds its own parsing and comparison with ``signal.alarm``, which only works in the
main thread of a process, and an alarm cannot interrupt a long computation inside C (a huge
integer power). So the registered verifier runs the check in a worker process of the verifier pool
(:mod:`rlvr.core.scoring`), whose main thread may use signals and which the parent kills at its
deadline. Inside a pool worker it runs inline. :func:`check_math` is the inline check itself.
"""

from __future__ import annotations

import threading
from typing import Any

from rlvr.core import scoring
from rlvr.core.registry import verifier
from rlvr.core.types import Score
from rlvr.verifiers.extract import final_math_answer, golds

#: Extracted answers longer than this are refused without parsing: no real final answer is this
#: long, and sympy on a 100 kB expression only burns the deadline.
MAX_ANSWER_CHARS = 1000
#: math-verify's own per-step timeouts (seconds), well inside the pool's per-call deadline.
PARSE_TIMEOUT_S = 2
COMPARE_TIMEOUT_S = 2


def _normalise_text(s: str) -> str:
    return "".join(s.split()).rstrip(".").replace("\\!", "").replace("\\,", "").replace("$", "")


def check_math(completion: str, answer: Any, **info: Any) -> Score:
    """Inline math check (no process isolation). Signals are used only in a main thread."""
    if not isinstance(completion, str):
        return Score(0.0, False, reason=f"completion is {type(completion).__name__}, not text")
    refs = [g for g in golds(answer) if g.strip()]
    if not refs:
        return Score(0.0, False, reason="no reference answer")
    pred, source = final_math_answer(completion)
    if pred is None:
        return Score(0.0, False, reason="no final answer (\\boxed{}, #### or <answer>) found")
    if not pred.strip():
        return Score(0.0, False, reason=f"empty final answer ({source})")
    if len(pred) > MAX_ANSWER_CHARS:
        return Score(0.0, False, reason=f"final answer is {len(pred)} chars, over {MAX_ANSWER_CHARS}")
    # Cheap exact textual match first: most correct answers need no sympy.
    norm = _normalise_text(pred)
    for g in refs:
        if _normalise_text(g) == norm:
            return Score(1.0, True, reason=f"matched {g!r} textually ({source})")
    if not _signals_usable():
        return Score(0.0, False, reason="math check needs a main thread; run it through the pool")
    return _sympy_check(pred, refs, source)


def _signals_usable() -> bool:
    return threading.current_thread() is threading.main_thread()


def _sympy_check(pred: str, refs: list[str], source: str) -> Score:
    # imported here: math-verify pulls in sympy and latex2sympy (~1 s), needed only in workers
    from math_verify import parse
    from math_verify import verify as mv_verify

    try:
        parsed_pred = parse(_as_latex(pred), parsing_timeout=PARSE_TIMEOUT_S)
    except Exception as e:  # math-verify's timeout and parse errors alike
        return Score(0.0, False, reason=f"could not parse answer {pred[:80]!r}: {type(e).__name__}")
    if not parsed_pred:
        return Score(0.0, False, reason=f"could not parse answer {pred[:80]!r}")
    for g in refs:
        try:
            parsed_gold = parse(_as_latex(g), parsing_timeout=PARSE_TIMEOUT_S)
            ok = bool(parsed_gold) and mv_verify(parsed_gold, parsed_pred,
                                                 timeout_seconds=COMPARE_TIMEOUT_S)
        except Exception:
            ok = False
        if ok:
            return Score(1.0, True, reason=f"equivalent to {g!r} ({source})")
    return Score(0.0, False, reason=f"{pred[:80]!r} ({source}) not equivalent to {refs[:3]!r}")


def _as_latex(s: str) -> str:
    # math-verify extracts from delimited LaTeX; a box is the most reliable delimiter.
    return "\\boxed{" + s + "}"


@verifier("math")
def math_answer(completion: str, answer: Any, **info: Any) -> Score:
    """Math final answer (\\boxed{}, ####, <answer>) equivalent to the reference via math-verify."""
    if scoring.in_pool_worker() and _signals_usable():
        return check_math(completion, answer, **info)
    return scoring.run_isolated(check_math, completion, answer, info)
