"""Bubblewrap isolation for the local backend (``LocalBackend(isolation="bwrap")``).

``bwrap`` builds the same layers as the built-in launcher (new namespaces, a read-only view of the
system, private ``/tmp``, no network) from a well-audited setuid-free tool; the launcher still runs
inside it to apply the rlimits and run the program. Install it with
``apt-get install -y bubblewrap``.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import time

from rlvr.verifiers.sandbox.base import ExecResult, Limits, kill_group, read_capped


def available() -> bool:
    return shutil.which("bwrap") is not None


def command(backend, scratch: str, status_fd: int, uid: int | None = None) -> list[str]:
    """The bwrap argv that runs the launcher on ``scratch/config.bin``, status on ``status_fd``."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--cap-drop", "ALL"]
    for path in backend.binds:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--dev", "/dev", "--tmpfs", "/tmp", "--bind", scratch, "/sandbox", "--chdir", "/sandbox"]
    if uid is not None:
        argv += ["--uid", str(uid), "--gid", str(uid)]
    from rlvr.verifiers.sandbox.local import LAUNCHER

    argv += ["--ro-bind", str(LAUNCHER), "/launcher.py",
             backend.python, "-I", "-S", "/launcher.py", "/sandbox/config.bin", str(status_fd)]
    return argv


def run(backend, scratch: str, lim: dict, limits: Limits, timeout_s: float, t0: float) -> ExecResult:
    """One program under bubblewrap; the launcher inside applies rlimits and reports on fd 3."""
    from rlvr.verifiers.sandbox.local import _parse_status, classify

    cfg = {"scratch": "/sandbox", "program": "/sandbox/main.py", "stdin": "/sandbox/stdin.txt",
           "limits": lim, "namespaces": False, "tmpfs_mb": limits.tmpfs_mb, "uid_base": None,
           "root_dir": "", "binds": [], "site_packages": backend.site_packages}
    with open(os.path.join(scratch, "config.bin"), "wb") as f:
        marshal.dump(cfg, f)
    os.chmod(scratch, 0o755)
    r, w = os.pipe()
    proc = subprocess.Popen(command(backend, scratch, w), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w,),
                            start_new_session=True, env={}, cwd=scratch)
    os.close(w)
    buf = bytearray()
    events: dict = {"layers": {}, "warnings": []}
    try:
        out, err, truncated, why = read_capped(proc.stdout.fileno(), proc.stderr.fileno(),
                                               limits.output_bytes, t0 + timeout_s,
                                               lambda: proc.poll() is not None, {r: buf})
    finally:
        kill_group(proc.pid)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        os.close(r)
    for line in buf.decode("utf-8", "replace").splitlines():
        _parse_status(line, events)
    events["layers"] = {"bwrap": True, "pid_ns": True, "net_ns": True, "mount_ns": True,
                        "ipc_ns": True, "user_ns": True, "fs_root": True, "rlimits": True,
                        "uid_drop": False}
    info = {"layers": events["layers"], "warnings": events["warnings"], "backend": "local/bwrap"}
    return classify(events, why, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                    truncated, time.monotonic() - t0, limits, info)
