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

from rlvr.verifiers.sandbox.base import STATUSES, ExecResult, Limits, SandboxUnavailable
from rlvr.verifiers.sandbox.local import LocalBackend
from rlvr.verifiers.sandbox.pool import Job, PerProcess, SandboxPool

__all__ = ["STATUSES", "ExecResult", "Job", "Limits", "SandboxPool", "SandboxUnavailable",
           "get_backend", "make_backend"]

BACKENDS = ("local", "docker")


def make_backend(name: str = "local", **options):
    """A new backend by name; ``options`` go to its constructor."""
    if name == "local":
        return LocalBackend(**options)
    if name == "docker":
        from rlvr.verifiers.sandbox.docker_backend import DockerBackend

        return DockerBackend(**options)
    raise ValueError(f"unknown sandbox backend {name!r}; known: {', '.join(BACKENDS)}")


_default = PerProcess(lambda: make_backend(os.environ.get("RLVR_SANDBOX", "local")))


def get_backend():
    """The process-wide default backend (``RLVR_SANDBOX``, else ``local``), created once."""
    return _default.get()


def set_backend(backend) -> None:
    """Replace the process-wide default backend (e.g. a configured Docker one)."""
    _default.set(backend)
