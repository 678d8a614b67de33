"""Failing fast: each step's failed episodes counted by phase (``errors/<phase>`` metrics), and a
run whose rewards are all errors for ``run.max_error_steps`` consecutive steps stopped with the most
common reason — a dead retriever or a verifier that always times out is a broken setup, not a bad
sample, and training on all-zero rewards would only hide it.

Phases, from where the episode loop (:mod:`rlvr.rollout.episodes`) and the verifiers record a failure:

``reset``      the environment could not start the episode (``"reset failed: ..."``)
``engine``     generation failed (``"engine failed: ..."``)
``step``       the environment's step raised: a tool call, retrieval or sandbox run
``score``      the environment's scoring raised (``info["score_error"]``)
``verifier``   a verifier timed out, crashed or raised (its reason says so; the reward is 0)
``retrieval``  every search of the episode failed (a dead retriever answers each one with an
               error observation, so the episode itself goes on; ``info["retrieval_errors"]``)
"""

from __future__ import annotations

from collections import Counter

from rlvr.core.types import Trajectory

PHASES = ("reset", "engine", "step", "score", "verifier", "retrieval")
_PREFIX = {"reset failed": "reset", "engine failed": "engine", "step failed": "step"}
#: substrings of a Score reason that mean the verifier itself failed (see rlvr.core.scoring)
_VERIFIER_FAILED = ("verifier timed out", "verifier worker crashed", "could not be sent to a",
                    "raised ", "returned ")


def error_of(t: Trajectory) -> tuple[str, str] | None:
    """(phase, reason) of a failed episode, or None when its reward is a real verdict."""
    if t.error:
        head = t.error.split(":", 1)[0]
        return _PREFIX.get(head, "step"), t.error
    if t.info.get("score_error"):
        return "score", f"scoring failed: {t.info['score_error']}"
    reason = str(t.info.get("score_reason", ""))
    if any(m in reason for m in _VERIFIER_FAILED) and "verifier" in reason:
        return "verifier", reason
    failed, searches = t.info.get("retrieval_errors", 0), t.info.get("searches", 0)
    if failed and failed >= searches:
        last = next((c.error for c in reversed(t.tool_calls) if getattr(c, "error", None)), "")
        return "retrieval", f"every search of the episode failed ({int(failed)}): {last}"
    return None


def error_metrics(trajs: list[Trajectory]) -> dict[str, float]:
    """``errors/<phase>``: failed episodes of the step per phase (every phase, zeros included, so
    the curves line up across steps)."""
    counts = Counter(e[0] for e in map(error_of, trajs) if e)
    return {f"errors/{p}": float(counts.get(p, 0)) for p in PHASES}


def check_error_streak(state: dict, step: int, trajs: list[Trajectory], max_steps: int) -> None:
    """Count consecutive steps whose every reward is an error (in ``state``, the learner's runtime
    dict); at ``max_steps`` (0 = never) stop the run with the most common reason, its phase, how
    many episodes it hit, and a task id that shows it."""
    if max_steps < 0:
        raise ValueError(f"run.max_error_steps must be >= 0 (0 = never stop), got {max_steps}")
    errors = [(t, e) for t, e in ((t, error_of(t)) for t in trajs) if e]
    if not trajs or len(errors) < len(trajs):
        state["error_steps"], state["error_reasons"] = 0, Counter()
        return
    state["error_steps"] = state.get("error_steps", 0) + 1
    reasons = state.setdefault("error_reasons", Counter())
    examples = state.setdefault("error_examples", {})
    for t, (phase, reason) in errors:
        key = (phase, reason[:300])
        reasons[key] += 1
        examples.setdefault(key, t.task_id)
    if max_steps and state["error_steps"] >= max_steps:
        (phase, reason), n = reasons.most_common(1)[0]
        total = sum(reasons.values())
        raise RuntimeError(
            f"step {step}: every reward of the last {state['error_steps']} steps was an error "
            f"(run.max_error_steps = {max_steps}); the most common, {n} of {total} episodes, in "
            f"phase {phase!r} (e.g. task {examples[(phase, reason[:300])] or '?'}): {reason}")
