"""Sandboxed execution of untrusted programs: backends behind one interface, and a pool.

    from rlvr.verifiers.sandbox import get_backend
    result = get_backend().run("print(input()[::-1])", stdin="abc", timeout_s=5)
    result.status, result.stdout        # ("ok", "cba\\n")

Backends: ``local`` (namespaces + private uid + rlimits; the default) and ``docker`` (containers
from a pool, through the ``docker`` SDK, when an engine is reachable). ``RLVR_SANDBOX`` picks the
default backend by name.
"""

from __future__ import annotations

import os
import threading

from rlvr.verifiers.sandbox.base import STATUSES, ExecResult, Limits, SandboxUnavailable
from rlvr.verifiers.sandbox.local import LocalBackend
from rlvr.verifiers.sandbox.pool import Job, SandboxPool

__all__ = ["STATUSES", "ExecResult", "Job", "Limits", "SandboxPool", "SandboxUnavailable",
           "get_backend", "make_backend"]

BACKENDS = ("local", "docker")
_default = None
_lock = threading.Lock()


def make_backend(name: str = "local", **options):
    """A new backend by name; ``options`` go to its constructor."""
    if name == "local":
        return LocalBackend(**options)
    if name == "docker":
        from rlvr.verifiers.sandbox.docker_backend import DockerBackend

        return DockerBackend(**options)
    raise ValueError(f"unknown sandbox backend {name!r}; known: {', '.join(BACKENDS)}")


def get_backend():
    """The process-wide default backend (``RLVR_SANDBOX``, else ``local``), created once."""
    global _default
    with _lock:
        if _default is None:
            _default = make_backend(os.environ.get("RLVR_SANDBOX", "local"))
        return _default


def _forget_after_fork() -> None:
    # A forked child (a scoring worker) must not share the parent's launcher or lock: it starts
    # its own backend on first use.
    global _default, _lock
    _default = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def set_backend(backend) -> None:
    """Replace the process-wide default backend (e.g. a configured Docker one)."""
    global _default
    with _lock:
        _default = backend
