"""Calling verifiers: one safely, several combined with weights, many through a process pool.

Verifiers never raise on model output; this module makes sure that holds even for a plugin that
does: an exception becomes ``Score(0.0, False, reason=...)``.

Checks can be slow or hang (sympy on an adversarial expression), so :func:`verify_batch` runs them
in worker processes with a per-call deadline kept by the parent: a check past its deadline, or one
whose worker dies, scores 0 with the reason, and the worker is killed and replaced, so training
never stalls on one completion.

Workers are forked by default (POSIX). ``forkserver`` and ``spawn`` re-run the caller's
``__main__`` in every worker, which breaks plain scripts without an ``if __name__ == "__main__"``
guard and loses verifiers registered there. Forking a parent that holds threads (torch,
tokenizers) can in rare cases leave a child stuck on a lock copied mid-use; such a child is just
another hung check, killed and replaced at its deadline.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing as mp
import os
import pickle
import threading
import time
from collections import deque
from multiprocessing.connection import wait as wait_for_conns
from typing import Any, Callable, Iterable

from rlvr.core.registry import VERIFIERS
from rlvr.core.types import Score

#: Seconds one check may take in a pool worker before it is killed and scored 0.
DEFAULT_TIMEOUT_S = 10.0
#: Reasons are for humans; a verifier echoing a 10 MB completion must not flood the pipe or logs.
MAX_REASON_CHARS = 500


def verify(name: str, completion: str, answer: Any, **info: Any) -> Score:
    """Run the verifier ``name``; a raising verifier scores 0 with the error as its reason."""
    return _call(name, VERIFIERS.get(name), completion, answer, info)


def combine(weights: dict[str, float], completion: str, answer: Any, **info: Any) -> Score:
    """Weighted sum of several verifiers. ``parts`` keeps each one's reward; ``correct`` is the
    first verifier's verdict (by convention the accuracy verifier comes first)."""
    return _combine_resolved(_resolve_weights(weights), completion, answer, info)


def _call(name: str, fn: Callable, completion: str, answer: Any, info: dict) -> Score:
    try:
        score = fn(completion, answer, **info)
    except Exception as e:  # untrusted output must never crash training
        return Score(0.0, False, reason=f"verifier {name!r} raised {type(e).__name__}: {e}"[
            :MAX_REASON_CHARS])
    if not isinstance(score, Score):
        return Score(0.0, False, reason=f"verifier {name!r} returned {type(score).__name__}, not Score")
    return score


def _resolve_weights(weights: dict[str, float]) -> list[tuple[str, float, Callable]]:
    if not weights:
        raise ValueError("no verifiers named: give at least one name → weight")
    return [(name, float(w), VERIFIERS.get(name)) for name, w in weights.items()]


def _combine_resolved(resolved, completion: str, answer: Any, info: dict) -> Score:
    total, parts, reasons, correct = 0.0, {}, [], None
    for i, (name, w, fn) in enumerate(resolved):
        s = _call(name, fn, completion, answer, info)
        total += w * s.reward
        parts[name] = s.reward
        if i == 0:
            correct = s.correct
        if s.reason:
            reasons.append(f"{name}: {s.reason}")
    return Score(total, correct, parts, "; ".join(reasons))


# -- the worker side -----------------------------------------------------------------------------

_IN_WORKER = False


def in_pool_worker() -> bool:
    """True inside a verifier pool worker (where a verifier may use signals in its main thread)."""
    return _IN_WORKER


def _worker_main(conn) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # the job could not be unpickled here (e.g. a function not importable)
            conn.send(_failed(f"job could not be loaded in the worker: {type(e).__name__}: {e}"))
            continue
        if job is None:
            return
        kind, target, completion, answer, info = job
        try:
            if kind == "fn":
                name, fn = target
                score = _call(name, fn, completion, answer, info)
            elif kind == "name":
                score = verify(target, completion, answer, **info)
            else:  # "weights": a list of (name, weight, fn-or-None)
                resolved = [(n, w, fn if fn is not None else VERIFIERS.get(n)) for n, w, fn in target]
                score = _combine_resolved(resolved, completion, answer, info)
            out = _to_wire(score)
        except BaseException as e:  # noqa: BLE001 — the worker must answer, whatever happened
            out = _failed(f"{type(e).__name__}: {e}")
        try:
            conn.send(out)
        except Exception as e:  # e.g. unpicklable parts: report rather than hang the parent
            conn.send(_failed(f"result could not be sent: {type(e).__name__}: {e}"))


def _to_wire(s: Score) -> dict:
    return {"reward": float(s.reward), "correct": s.correct,
            "parts": {str(k): float(v) for k, v in s.parts.items()},
            "reason": str(s.reason)[:MAX_REASON_CHARS]}


def _failed(reason: str) -> dict:
    return {"reward": 0.0, "correct": False, "parts": {}, "reason": reason[:MAX_REASON_CHARS]}


# -- the parent side -----------------------------------------------------------------------------

class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True,
                                name="rlvr-verifier")
        self.proc.start()
        child.close()
        self.job: int | None = None
        self.deadline = 0.0

    def stop(self, kill: bool) -> None:
        try:
            if kill:
                self.proc.kill()
            else:
                self.conn.send(None)
        except Exception:
            pass
        self.proc.join(1.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(1.0)
        self.conn.close()


class VerifierPool:
    """Worker processes that run verifier jobs, each under a parent-side deadline.

    A job past its deadline gets its worker killed (SIGKILL: no cooperation needed from a hung
    C extension) and replaced; a worker that dies mid-job is replaced too. Either way the job
    scores 0 with the reason. ``map`` keeps input order. Safe to share between threads (calls are
    serialised).
    """

    def __init__(self, workers: int = 2, start_method: str | None = None) -> None:
        if workers < 1:
            raise ValueError(f"a verifier pool needs at least 1 worker, got {workers}")
        start_method = start_method or default_start_method()
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that has already imported the slow modules (~1 s).
            self.ctx.set_forkserver_preload(["rlvr.core.scoring", "rlvr.verifiers.math", "math_verify"])
        elif start_method == "fork":
            _preload()  # imported once here, shared copy-on-write by every worker and replacement
        self.size = workers
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.replaced = 0  # workers killed or lost and started again, for tests and metrics

    def _ensure(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self.ctx))

    def _replace(self, w: _Worker, kill: bool) -> None:
        w.stop(kill=kill)
        self._workers[self._workers.index(w)] = _Worker(self.ctx)
        self.replaced += 1

    def map(self, jobs: list[tuple], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Score]:
        """Run ``jobs`` (``(kind, target, completion, answer, info)``); one Score each, in order."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        with self._lock:
            self._ensure()
            results: list[Score | None] = [None] * len(jobs)
            pending = deque(range(len(jobs)))
            while True:
                for w in self._workers:
                    while w.job is None and pending:
                        i = pending.popleft()
                        try:
                            w.conn.send(jobs[i])
                        except (pickle.PicklingError, TypeError, AttributeError) as e:
                            results[i] = Score(0.0, False, reason=f"job {i} could not be sent to a "
                                               f"worker: {type(e).__name__}: {e}"[:MAX_REASON_CHARS])
                            continue
                        except OSError as e:  # the idle worker died: replace it, retry the job
                            pending.appendleft(i)
                            self._replace(w, kill=True)
                            break
                        w.job, w.deadline = i, time.monotonic() + timeout_s
                busy = [w for w in self._workers if w.job is not None]
                if not busy:
                    if pending:
                        continue
                    break
                left = min(w.deadline for w in busy) - time.monotonic()
                ready = set(wait_for_conns([w.conn for w in busy], timeout=max(0.0, left)))
                for w in busy:
                    i = w.job
                    if w.conn in ready:
                        try:
                            out = w.conn.recv()
                            results[i] = Score(out["reward"], out["correct"], out["parts"],
                                               out["reason"])
                            w.job = None
                            continue
                        except (EOFError, OSError):
                            w.proc.join(1.0)
                            results[i] = Score(0.0, False, reason=f"verifier worker crashed "
                                               f"(exit code {w.proc.exitcode})")
                            self._replace(w, kill=True)
                    elif time.monotonic() >= w.deadline:
                        results[i] = Score(0.0, False, reason=f"verifier timed out after "
                                           f"{timeout_s:g}s (worker killed)")
                        self._replace(w, kill=True)
            return results  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if os.getpid() == self.pid:
                for w in self._workers:
                    w.stop(kill=False)
            self._workers = []

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_POOLS: dict[tuple[int, str], VerifierPool] = {}
_POOLS_LOCK = threading.Lock()


def default_start_method() -> str:
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def _preload() -> None:
    for mod in ("rlvr.verifiers.math", "math_verify"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def shared_pool(workers: int | None = None, start_method: str | None = None) -> VerifierPool:
    """The process-wide pool of ``workers`` workers (started on first use, closed at exit)."""
    key = (workers or default_workers(), start_method or default_start_method())
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None or pool.pid != os.getpid():  # a forked child never reuses its parent's
            pool = _POOLS[key] = VerifierPool(*key)
        return pool


@atexit.register
def shutdown_pools() -> None:
    """Stop every shared pool's workers."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


def _by_reference(fn: Callable) -> Callable | None:
    """``fn`` if a worker can import it by name (module-level function), else None."""
    try:
        pickle.dumps(fn)
        return fn
    except Exception:
        return None


def _job_target(name_or_weights: str | dict[str, float]) -> tuple[str, Any]:
    if isinstance(name_or_weights, str):
        fn = _by_reference(VERIFIERS.get(name_or_weights))
        return ("fn", (name_or_weights, fn)) if fn is not None else ("name", name_or_weights)
    if isinstance(name_or_weights, dict):
        resolved = _resolve_weights(name_or_weights)
        return "weights", [(n, w, _by_reference(fn)) for n, w, fn in resolved]
    raise TypeError(f"verify_batch needs a verifier name or a name → weight dict, "
                    f"got {type(name_or_weights).__name__}")


def _item(i: int, item: Any) -> tuple[str, Any, dict]:
    if isinstance(item, dict):
        if "completion" not in item:
            raise ValueError(f"item {i}: missing field 'completion'")
        info = item.get("info") or {}
        completion, answer = item["completion"], item.get("answer")
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        completion, answer = item[0], item[1]
        info = item[2] if len(item) == 3 and item[2] is not None else {}
    else:
        raise ValueError(f"item {i}: expected a dict with 'completion', 'answer', optional 'info', "
                         f"or a (completion, answer[, info]) tuple; got {type(item).__name__}")
    if not isinstance(info, dict):
        raise ValueError(f"item {i}: 'info' must be an object, got {type(info).__name__}")
    return completion, answer, info


def verify_batch(name_or_weights: str | dict[str, float], items: Iterable[Any], *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None,
                 pool: VerifierPool | None = None) -> list[Score]:
    """Score many ``items`` with one verifier (a name) or several (name → weight), in order.

    Each item is ``{"completion", "answer", "info"?}`` or ``(completion, answer[, info])``. Checks
    run in the shared pool of ``workers`` processes (or the given ``pool``) under a per-call
    deadline of ``timeout_s``; a timed-out or crashed check scores 0 with its reason.
    ``workers=0`` runs in this process with no isolation and no deadline (cheap verifiers only).
    """
    parsed = [_item(i, it) for i, it in enumerate(items)]
    if not parsed:
        return []
    if workers == 0 and pool is None:
        if isinstance(name_or_weights, str):
            return [verify(name_or_weights, c, a, **inf) for c, a, inf in parsed]
        return [combine(name_or_weights, c, a, **inf) for c, a, inf in parsed]
    kind, target = _job_target(name_or_weights)
    jobs = [(kind, target, c, a, inf) for c, a, inf in parsed]
    return (pool or shared_pool(workers)).map(jobs, timeout_s=timeout_s)


def run_isolated(fn: Callable, completion: str, answer: Any, info: dict,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> Score:
    """One call of ``fn`` (a module-level function) in a shared pool worker, under a deadline."""
    name = getattr(fn, "__qualname__", "verifier")
    return shared_pool().map([("fn", (name, fn), completion, answer, info or {})], timeout_s)[0]
