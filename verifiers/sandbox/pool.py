"""Run many programs concurrently through one backend.

Each local run is a subprocess, so threads only wait on pipes: ``workers`` bounds how many programs
execute at once (set it to the cores you can give to tests). The Docker backend keeps its own pool
of containers; this pool decides how many of them are busy at a time.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from rlvr.verifiers.sandbox.base import ExecResult, Limits


@dataclass
class Job:
    """One program to run: its source, stdin and time limit."""

    program: str
    stdin: str = ""
    timeout_s: float = 10.0
    limits: Limits | None = None


class SandboxPool:
    """``run_many(jobs)`` → results in job order, at most ``workers`` programs at once."""

    def __init__(self, backend, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.backend = backend
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")

    def run(self, program: str, stdin: str = "", timeout_s: float = 10.0,
            limits: Limits | None = None) -> ExecResult:
        return self._executor.submit(self.backend.run, program, stdin, timeout_s, limits).result()

    def run_many(self, jobs: list[Job]) -> list[ExecResult]:
        futures = [self._executor.submit(self.backend.run, j.program, j.stdin, j.timeout_s, j.limits)
                   for j in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PerProcess:
    """One object per process, built on first use (under a lock). A forked child — a scoring
    worker — must not share its parent's launcher, threads or lock: it builds its own."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.value, self.lock = None, threading.Lock()

    def get(self) -> Any:
        with self.lock:
            if self.value is None:
                self.value = self.build()
            return self.value

    def set(self, value: Any) -> None:
        with self.lock:
            self.value = value
