"""Bubblewrap isolation for the local backend (``LocalBackend(isolation="bwrap")``).

``bwrap`` builds the same layers as the built-in launcher (new namespaces, a read-only view of the
system, private ``/tmp``, no network) from a well-audited setuid-free tool; the launcher still runs
inside it to apply the rlimits and run the program. Install it with
``apt-get install -y bubblewrap``.
"""

from __future__ import annotations

import itertools
import marshal
import os
import shutil
import subprocess
import time

from rlvr.verifiers.sandbox.base import (LAUNCHER, ExecResult, Limits, classify, kill_group,
                                         kill_uid, parse_status, read_capped)

_counter = itertools.count()


def _next_uid(base: int) -> int:
    """A uid for one run. Inside bwrap the launcher's pid is tiny and the same for every run, so the
    uid comes from this process's pid and a counter (distinct among runs alive at once)."""
    return base + 5_000_000 + (os.getpid() % 4000) * 1000 + next(_counter) % 1000


def available() -> bool:
    return shutil.which("bwrap") is not None


def command(backend, scratch: str, status_fd: int, tmpfs_mb: int = 64) -> list[str]:
    """The bwrap argv that runs the launcher on ``scratch/config.bin``, status on ``status_fd``."""
    # As root, bwrap keeps root inside (no user namespace); the launcher then drops the program to
    # a private uid, which clears its capabilities. Unprivileged, bwrap uses a user namespace.
    argv = ["bwrap", "--die-with-parent", "--new-session", "--clearenv"]
    if os.geteuid() != 0:
        argv += ["--unshare-all", "--cap-drop", "ALL"]
    else:  # every namespace but the user one, which would leave the private uid unmapped
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try"]
    # the private /tmp first: a bind below /tmp (a virtual environment there) then stays visible
    argv += ["--dev", "/dev", "--perms", "1777", "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp"]
    made = {"/tmp"}
    links = getattr(backend, "links", {})  # merged-/usr links, see local._links
    for path in backend.binds:
        if not os.path.exists(path):
            continue
        parent = os.path.dirname(path)
        ancestors = []
        while parent not in ("/", "") and parent not in made:
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for a in reversed(ancestors):  # traversable by the program's uid (/root is 0700 outside)
            argv += ["--perms", "0755", "--dir", a]
            made.add(a)
        argv += ["--symlink", links[path], path] if path in links else ["--ro-bind", path, path]
    argv += ["--bind", scratch, "/sandbox", "--chdir", "/sandbox"]
    # a virtual environment's python is a symlink out of it; unless site-packages are wanted (and
    # the environment is bound), run the interpreter it points to
    python = backend.python if backend.site_packages else os.path.realpath(backend.python)

    argv += ["--ro-bind", str(LAUNCHER), "/launcher.py",
             "--remount-ro", "/",
             python, "-I", "-S", "/launcher.py", "/sandbox/config.bin", str(status_fd)]
    return argv


def run(backend, scratch: str, lim: dict, limits: Limits, timeout_s: float, t0: float) -> ExecResult:
    """One program under bubblewrap; the launcher inside applies rlimits and reports on fd 3."""
    cfg = {"scratch": "/sandbox", "program": "/sandbox/main.py", "stdin": "/sandbox/stdin.txt",
           "limits": lim, "namespaces": False, "tmpfs_mb": limits.tmpfs_mb,
           "uid_base": backend.uid_base, "uid_fixed": _next_uid(backend.uid_base),
           "root_dir": "", "binds": [], "site_packages": backend.site_packages}
    with open(os.path.join(scratch, "config.bin"), "wb") as f:
        marshal.dump(cfg, f)
    os.chmod(scratch, 0o755)
    r, w = os.pipe()
    proc = subprocess.Popen(command(backend, scratch, w, limits.tmpfs_mb), stdin=subprocess.DEVNULL,
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
        if proc.poll() is None:  # only a live process's group is surely still ours
            kill_group(proc.pid)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        os.close(r)
    for line in buf.decode("utf-8", "replace").splitlines():
        parse_status(line, events)
    uid_drop = bool(events["layers"].get("uid_drop"))
    if events.get("uid") is not None:
        kill_uid(events["uid"])  # belt and braces: bwrap's pid namespace already took them
    events["layers"] = {"bwrap": True, "pid_ns": True, "net_ns": True, "mount_ns": True,
                        "ipc_ns": True, "user_ns": os.geteuid() != 0, "fs_root": True,
                        "rlimits": True, "uid_drop": uid_drop}
    info = {"layers": events["layers"], "warnings": events["warnings"], "backend": "local/bwrap"}
    return classify(events, why, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                    truncated, time.monotonic() - t0, limits, info)
