"""The local backend: a fresh, isolated process per program, no daemon or container engine needed.

Layers (see ``_launcher.py`` for how each is built), each reported by :meth:`LocalBackend.check`:

- new mount / pid / net / ipc / uts namespaces (``unshare``), a private root file system with the
  interpreter read-only and small tmpfs mounts for ``/sandbox`` and ``/tmp``;
- an unprivileged uid unique to the run (root only), then a user namespace with no capabilities;
- rlimits: CPU time, address space, file size, open files, processes;
- a wall-clock timeout that kills the run's process group and its pid namespace;
- stdout / stderr capped while they are read; an empty environment; a scratch directory removed
  afterwards.

A layer the kernel refuses degrades with a warning (logged once per process, and listed in
``ExecResult.info["warnings"]``), never silently. ``isolation="bwrap"`` runs the program under
bubblewrap instead of the built-in namespace code; with ``"auto"``, bubblewrap takes over when the
built-in namespaces are refused and ``bwrap`` is installed.
"""

from __future__ import annotations

import logging
import marshal
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from rlvr.verifiers.sandbox import bwrap
from rlvr.verifiers.sandbox.base import (LAUNCHER, ExecResult, Limits, SandboxUnavailable, classify,
                                         decode, kill_group, kill_pid, kill_uid, parse_status,
                                         read_capped)

log = logging.getLogger(__name__)

_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(msg: str) -> None:
    with _warn_lock:
        if msg in _warned:
            return
        _warned.add(msg)
    log.warning("sandbox: %s", msg)


def _default_binds(python: str) -> list[str]:
    """Read-only paths the program sees: system libraries and the interpreter's prefix."""
    binds = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin"]
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == b or prefix.startswith(b + "/") for b in binds):
        binds.append(prefix)
    return binds


def _links(binds: list[str]) -> dict[str, str]:
    """Bind paths that may be recreated as symlinks: path → link target relative to ``/``.

    On merged-/usr systems ``/bin``, ``/lib``, ``/lib64`` and ``/sbin`` are symlinks into ``/usr``.
    Binding each (which follows the link) shows ``/usr``'s directories twice and costs two mount
    calls per run apiece; the same link inside the sandbox shows the same read-only files. Only a
    link whose resolved target lies in another bound real directory qualifies (anything else would
    dangle inside), and only when no other bind lies under it (it is made before the binds)."""
    real_dirs = [b for b in binds if os.path.isdir(b) and not os.path.islink(b)]
    links = {}
    for path in binds:
        if not os.path.islink(path) or any(b.startswith(path + "/") for b in binds):
            continue
        target = os.path.realpath(path)
        if any(target == d or target.startswith(d + "/") for d in real_dirs):
            links[path] = os.path.relpath(target, os.path.dirname(path))
    return links


class LocalBackend:
    """Runs each program in a fresh process under namespaces, a private uid and rlimits.

    ``isolation``: ``"auto"`` (namespaces where the kernel allows, warning otherwise), ``"bwrap"``
    (bubblewrap; fails when it is not installed) or ``"none"`` (rlimits, timeout and output caps only;
    for debugging). ``site_packages`` makes the interpreter's site-packages importable (off by
    default: tests of competitive and HumanEval-style code need only the standard library).
    """

    name = "local"

    def __init__(self, isolation: str = "auto", *, uid_base: int = 200000, python: str | None = None,
                 site_packages: bool = False, extra_binds: tuple[str, ...] = (),
                 limits: Limits | None = None, scratch_root: str | None = None) -> None:
        if isolation not in ("auto", "bwrap", "none"):
            raise ValueError(f"isolation must be auto, bwrap or none, got {isolation!r}")
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(f"the local sandbox needs Linux, this is {sys.platform}")
        self.isolation = isolation
        self.uid_base = uid_base
        self.python = python or sys.executable
        self.site_packages = site_packages
        self.limits = limits or Limits()
        self.scratch_root = scratch_root
        self.binds = _default_binds(self.python) + list(extra_binds)
        if site_packages and sys.prefix != sys.base_prefix:
            self.binds.append(os.path.realpath(sys.prefix))
        self.links = _links(self.binds)
        if isolation == "bwrap":
            if not bwrap.available():
                raise SandboxUnavailable(
                    "isolation='bwrap' but bubblewrap is not installed (apt-get install -y bubblewrap)")
        self._zygote = None
        self._zsock = None
        self._fallback_bwrap = False
        self._zlock = threading.Lock()
        if isolation == "none":
            warn_once("isolation='none': no namespaces, the program can reach the network and files")

    # -- the interface ---------------------------------------------------------------------------
    def run(self, program: str, stdin: str = "", timeout_s: float = 10.0,
            limits: Limits | None = None) -> ExecResult:
        """Run one Python program; never raises on anything the program does."""
        limits = limits or self.limits
        t0 = time.monotonic()
        scratch = tempfile.mkdtemp(prefix="rlvr-sbx-", dir=self.scratch_root)
        try:
            return self._run(program, stdin, float(timeout_s), limits, scratch, t0)
        except Exception as e:  # the sandbox's own failure, reported rather than raised
            return ExecResult("sandbox_error", None, "", f"{type(e).__name__}: {e}",
                              time.monotonic() - t0)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def check(self) -> dict:
        """Run a probe program and report which isolation layers are active."""
        probe = self.run("print('ok')", timeout_s=10.0)
        return {"backend": self.name, "isolation": self.isolation, "works": probe.stdout.strip() == "ok",
                "status": probe.status, "layers": probe.info.get("layers", {}),
                "warnings": probe.info.get("warnings", []),
                "bubblewrap": shutil.which("bwrap") is not None, "python": self.python,
                "uid": os.geteuid()}

    def close(self) -> None:
        """Stop the zygote (it would also exit on its own when this process ends)."""
        with self._zlock:
            if self._zsock is not None:
                self._zsock.close()
                self._zsock = None
            if self._zygote is not None:
                self._zygote.kill()
                self._zygote.wait()
                self._zygote = None

    # -- internals -------------------------------------------------------------------------------
    def _zygote_socket(self):
        """The socket of the pre-started launcher (started on first use, restarted if it died)."""
        import socket

        with self._zlock:
            if self._zygote is not None and self._zygote.poll() is None:
                return self._zsock
            if self._zsock is not None:
                self._zsock.close()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._zygote = subprocess.Popen(
                [self.python, "-I", "-S", str(LAUNCHER), "--serve", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), env={}, cwd="/", start_new_session=True)
            theirs.close()
            self._zsock = ours
            return ours

    def _run(self, program: str, stdin: str, timeout_s: float, limits: Limits, scratch: str,
             t0: float) -> ExecResult:
        os.chmod(scratch, 0o700)
        prog_path = os.path.join(scratch, "main.py")
        stdin_path = os.path.join(scratch, "stdin.txt")
        with open(prog_path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(program)
        with open(stdin_path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(stdin)
        cpu_s = limits.cpu_s or int(math.ceil(timeout_s)) + 1
        lim = {"cpu_s": cpu_s, "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
               "open_files": limits.open_files, "processes": limits.processes}
        if self.isolation == "bwrap" or self._fallback_bwrap:
            return bwrap.run(self, scratch, lim, limits, timeout_s, t0)
        cfg = {"scratch": scratch, "program": prog_path, "stdin": stdin_path,
               "limits": lim, "namespaces": self.isolation == "auto", "tmpfs_mb": limits.tmpfs_mb,
               "uid_base": self.uid_base,
               "root_dir": os.path.join(scratch, "root"), "binds": [b for b in self.binds if b not in self.links],
               "links": self.links,
               "site_packages": self.site_packages, "wall_s": int(math.ceil(timeout_s))}
        os.mkdir(cfg["root_dir"])
        cfg_path = os.path.join(scratch, "config.bin")
        with open(cfg_path, "wb") as f:
            marshal.dump(cfg, f)
        result = self._launch(cfg_path, timeout_s, limits, t0)
        layers = result.info.get("layers") or {}
        if self.isolation == "auto" and layers and not layers.get("pid_ns"):
            if bwrap.available():  # e.g. a kernel that only lets setuid bwrap create namespaces
                warn_once("built-in namespaces unavailable: later runs use bubblewrap")
                self._fallback_bwrap = True
        if result.status == "sandbox_error" and not result.info.get("layers"):
            with self._zlock:  # the launcher never started: a dead zygote; start a new one
                if self._zygote is not None:
                    self._zygote.kill()
                    self._zygote.wait()
            result = self._launch(cfg_path, timeout_s, limits, t0)
        return result

    def _launch(self, cfg_path: str, timeout_s: float, limits: Limits, t0: float) -> ExecResult:
        import socket

        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, status
        try:
            writers = [w for _, w in pipes]
            for attempt in range(2):
                try:
                    socket.send_fds(self._zygote_socket(), [cfg_path.encode()], writers)
                    break
                except OSError:
                    if attempt:
                        raise
                    with self._zlock:  # the zygote died: start a new one
                        if self._zygote is not None:
                            self._zygote.kill()
                            self._zygote.wait()
            for w in writers:
                os.close(w)
            pipes = [(r, None) for r, _ in pipes]
            return self._supervise(pipes[0][0], pipes[1][0], pipes[2][0], timeout_s, limits, t0)
        finally:
            for r, w in pipes:
                os.close(r)
                if w is not None:
                    os.close(w)

    def _supervise(self, out_r: int, err_r: int, status_r: int, timeout_s: float, limits: Limits,
                   t0: float) -> ExecResult:
        status_buf = bytearray()
        events: dict = {"layers": {}, "warnings": []}
        done = []

        def on_status(_fd, chunk: bytes) -> None:
            if not chunk:
                done.append(True)  # the launcher exited
            *lines, rest = status_buf.split(b"\n")
            for line in lines:
                parse_status(line.decode("utf-8", "replace"), events)
            status_buf[:] = rest

        def finished() -> bool:
            # the launcher exited, or the program's status is in (the launcher's namespace
            # teardown need not be waited for)
            return bool(done) or "exit" in events or "signal" in events

        try:
            out, err, truncated, why = read_capped(out_r, err_r, limits.output_bytes, t0 + timeout_s,
                                                   finished, {status_r: status_buf}, on_status,
                                                   stop_when_streams_close=finished)
        finally:
            # Only while the run is unfinished are its pids surely still ours: a finished run's
            # pids may already belong to someone else. The namespace's init first (it takes the
            # namespace with it), then the launcher's group.
            if why or not finished():
                kill_pid(events.get("child_pid"))
                if "launcher_pid" in events:
                    kill_group(events["launcher_pid"])
        if status_buf:
            parse_status(status_buf.decode("utf-8", "replace"), events)
        if not events["layers"].get("pid_ns") and events.get("uid") is not None:
            for _ in range(5):  # no pid namespace: sweep the run's private uid for leftovers
                if kill_uid(events["uid"]) == 0:
                    break
        for msg in events["warnings"]:
            warn_once(msg)
        info = {"layers": events["layers"], "warnings": events["warnings"], "backend": self.name}
        return classify(events, why, decode(out), decode(err), truncated,
                        time.monotonic() - t0, limits, info)
