"""The sandbox interface: one program in, one :class:`ExecResult` out.

Every backend implements ``run(program, stdin="", timeout_s=..., limits=None) -> ExecResult`` and
``check() -> dict`` (which layers are active). ``status`` is one of :data:`STATUSES`.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: ``ok``: exit 0; ``error``: a non-zero exit (exceptions, failed asserts, MemoryError);
#: ``timeout``: the wall clock or the CPU-time limit ran out; ``killed``: ended by a signal;
#: ``output_limit``: stdout or stderr passed its cap (the run is stopped there);
#: ``sandbox_error``: the sandbox itself could not run the program.
STATUSES = ("ok", "error", "timeout", "killed", "output_limit", "sandbox_error")


class SandboxUnavailable(RuntimeError):
    """A backend cannot run here (no Docker engine, unsupported platform); the message says why."""


@dataclass
class Limits:
    """Resource limits of one run. Zero disables a limit (never the default)."""

    memory_mb: int = 512
    """Address space of the program (RLIMIT_AS locally, the cgroup memory limit in Docker)."""
    cpu_s: int = 0
    """CPU seconds; 0 = the wall-clock timeout rounded up plus one."""
    file_size_mb: int = 16
    """Largest file the program may write."""
    open_files: int = 64
    """Open file descriptors."""
    processes: int = 32
    """Processes and threads of the run's uid (a fork bomb stops here)."""
    output_bytes: int = 1 << 20
    """Cap on stdout and on stderr, each; passing it stops the run with ``output_limit``."""
    tmpfs_mb: int = 64
    """Size of each writable tmpfs (``/sandbox`` and ``/tmp``)."""


@dataclass
class ExecResult:
    """What happened to one program."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False  # stdout or stderr was cut at the cap
    signal: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # backend details (layers, warnings)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def read_capped(out_fd: int, err_fd: int, cap: int, deadline: float, exited,
                extra_fds: dict[int, bytearray] | None = None, on_extra=None,
                after_exit_grace: float = 0.2, stop_when_streams_close=None,
                ) -> tuple[bytes, bytes, bool, str]:
    """Read a run's stdout/stderr until both close, keeping at most ``cap`` bytes of each.

    Returns ``(stdout, stderr, truncated, why)`` where ``why`` is ``""``, ``"timeout"`` or
    ``"output_limit"``. Never buffers more than ``cap`` bytes per stream, however much the program
    prints. ``extra_fds`` (fd → buffer) are read too; ``on_extra(fd, chunk)`` is called on new data
    (``b""`` at EOF). A
    stream still open ``after_exit_grace`` seconds after ``exited()`` turned true (a leftover
    grandchild holding it) is abandoned. Once stdout and stderr are closed, reading stops as soon
    as ``stop_when_streams_close()`` is true, without waiting for the extra fds' EOF.
    """
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytearray] = {}
    for fd in (out_fd, err_fd):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
        bufs[fd] = bytearray()
    for fd in (extra_fds or {}):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    truncated, why, exited_at = False, "", None
    try:
        while sel.get_map():
            if (stop_when_streams_close is not None and out_fd not in sel.get_map()
                    and err_fd not in sel.get_map() and stop_when_streams_close()):
                break
            now = time.monotonic()
            if now >= deadline:
                why = "timeout"
                break
            if exited_at is None and exited():
                exited_at = now
            if exited_at is not None and now - exited_at > after_exit_grace:
                break
            wait = min(deadline - now, 0.05 if exited_at is not None else 0.5)
            for key, _ in sel.select(wait):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    if fd not in bufs and on_extra is not None:
                        on_extra(fd, b"")  # EOF
                    continue
                if fd in bufs:
                    buf = bufs[fd]
                    room = cap - len(buf)
                    buf += chunk[:max(room, 0)]
                    if len(chunk) > room:
                        truncated, why = True, "output_limit"
                else:
                    extra_fds[fd] += chunk
                    if on_extra is not None:
                        on_extra(fd, chunk)
            if why:
                break
    finally:
        sel.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), truncated, why


def kill_group(pid: int) -> None:
    """SIGKILL a process group led by ``pid`` (a run's session), ignoring one already gone."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_pid(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is ``uid`` (a run's private uid); returns how many."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            os.kill(int(entry), signal.SIGKILL)
                            n += 1
                        break
        except (OSError, ValueError):
            continue
    return n


# -- the launcher's protocol (the local and bubblewrap backends) ---------------------------------

#: The program that applies rlimits inside the sandbox and reports on its status pipe.
LAUNCHER = Path(__file__).with_name("_launcher.py")


def classify(events: dict, why: str, stdout: str, stderr: str, truncated: bool, duration: float,
             limits: Limits, info: dict) -> ExecResult:
    """The status of a finished run from the reader's verdict and the launcher's exit record."""
    if why == "timeout":
        return ExecResult("timeout", None, stdout, stderr, duration, truncated, None, info)
    if why == "output_limit":
        return ExecResult("output_limit", None, stdout, stderr, duration, True, None, info)
    if "exit" in events:
        code = events["exit"]
        return ExecResult("ok" if code == 0 else "error", code, stdout, stderr, duration,
                          truncated, None, info)
    if "signal" in events:
        sig = events["signal"]
        # SIGXCPU at the soft CPU limit, SIGKILL at the hard one: a timeout, not a crash
        cpu_out = sig == 24 or (sig == 9 and limits.cpu_s and duration >= limits.cpu_s)
        return ExecResult("timeout" if cpu_out else "killed", None, stdout, stderr, duration,
                          truncated, sig, info)
    return ExecResult("sandbox_error", None, stdout, stderr or "the launcher exited without a status",
                      duration, truncated, None, info)


def parse_status(line: str, events: dict) -> None:
    """One ``key value`` line of the launcher's status pipe into ``events``."""
    key, _, value = line.strip().partition(" ")
    try:
        if key == "layer":
            name, _, on = value.partition(" ")
            events["layers"][name] = on == "1"
        elif key == "warn":
            events["warnings"].append(value)
        elif key in ("uid", "child_pid", "launcher_pid", "exit", "signal"):
            events[key] = None if value == "-1" and key == "uid" else int(value)
    except ValueError:
        pass
