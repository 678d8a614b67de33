"""The Docker backend: programs run in a pool of locked-down, reused containers.

Each container: no network (``network_mode="none"``), memory / CPU / pids limits, a read-only root
file system with small tmpfs mounts at ``/sandbox`` and ``/tmp``, every capability dropped,
``no-new-privileges``, an init process. Its main process is ``sleep infinity``; programs run through
``docker exec`` as an unprivileged user (``65534:65534`` by default), started by a small bootstrap
that applies the time limit, caps the output, then kills every process of that user and empties
the tmpfs mounts, so the next run finds the container as new. A container whose run went wrong
(the bootstrap itself timed out) is replaced.

The ``docker`` SDK is imported when the backend is created, never at ``import rlvr``. A missing SDK
or an unreachable engine raises :class:`SandboxUnavailable` saying which.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time

from rlvr.verifiers.sandbox.base import ExecResult, Limits, SandboxUnavailable

#: Runs inside the container: decode the program and stdin, run with a timeout and output caps,
#: clean up, print one JSON line. Arguments: timeout_s, cap, then base64 chunks of program and stdin
#: separated by "--" (one argument may hold at most 128 KiB).
BOOT = r"""
import base64, json, os, select, shutil, signal, subprocess, sys, tempfile, time
timeout, cap = float(sys.argv[1]), int(sys.argv[2])
sep = sys.argv.index("--")
prog = base64.b64decode("".join(sys.argv[3:sep]))
data = base64.b64decode("".join(sys.argv[sep + 1:]))
d = tempfile.mkdtemp(dir="/sandbox")
open(d + "/main.py", "wb").write(prog)
open(d + "/stdin.txt", "wb").write(data)
t0 = time.monotonic()
p = subprocess.Popen([sys.executable, "-I", "main.py"], cwd=d, stdin=open(d + "/stdin.txt", "rb"),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                     env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": d, "LANG": "C.UTF-8"})
bufs = {p.stdout.fileno(): b"", p.stderr.fileno(): b""}
why = ""
open_fds = list(bufs)
while open_fds:
    left = t0 + timeout - time.monotonic()
    if left <= 0:
        why = "timeout"; break
    ready, _, _ = select.select(open_fds, [], [], min(left, 0.5))
    for fd in ready:
        chunk = os.read(fd, 65536)
        if not chunk:
            open_fds.remove(fd); continue
        room = cap - len(bufs[fd])
        bufs[fd] += chunk[:max(room, 0)]
        if len(chunk) > room:
            why = "output_limit"
    if why:
        break
try:
    os.killpg(p.pid, signal.SIGKILL)
except OSError:
    pass
code = p.wait()
dur = time.monotonic() - t0
try:
    os.kill(-1, signal.SIGKILL)  # every other process of this user: daemons die with the run
except OSError:
    pass
for root in (d, "/tmp"):
    for name in os.listdir(root):
        path = os.path.join(root, name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
shutil.rmtree(d, ignore_errors=True)
out, err = bufs[p.stdout.fileno()], bufs[p.stderr.fileno()]
print(json.dumps({"why": why, "code": code, "dur": dur, "out": out.decode("utf-8", "replace"),
                  "err": err.decode("utf-8", "replace")}))
"""
_CHUNK = 120_000


def _chunks(data: bytes) -> list[str]:
    text = base64.b64encode(data).decode()
    return [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]


class DockerBackend:
    """Programs in reused, locked-down containers (``pool_size`` of them, created up front)."""

    name = "docker"

    def __init__(self, image: str = "python:3.11-slim", pool_size: int = 2, *,
                 user: str = "65534:65534", cpus: float = 1.0, limits: Limits | None = None,
                 client=None) -> None:
        try:
            import docker  # noqa: F401  (the optional extra: pip install 'rlvr[docker]')
        except ImportError as e:
            raise SandboxUnavailable(
                "the docker backend needs the docker SDK: pip install 'rlvr[docker]'") from e
        try:
            self.client = client or docker.from_env(timeout=30)
            self.client.ping()
        except Exception as e:
            raise SandboxUnavailable(
                f"no Docker engine reachable ({type(e).__name__}: {e}); start one or use the "
                f"local backend") from None
        self.image, self.user, self.cpus = image, user, cpus
        self.limits = limits or Limits()
        self._idle: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._containers: list = []
        for _ in range(pool_size):
            self._idle.put(self._create())

    def _create(self):
        lim = self.limits
        c = self.client.containers.run(
            self.image, ["sleep", "infinity"], detach=True, network_mode="none",
            mem_limit=f"{lim.memory_mb}m", memswap_limit=f"{lim.memory_mb}m",
            nano_cpus=int(self.cpus * 1e9), pids_limit=lim.processes, read_only=True,
            tmpfs={"/sandbox": f"size={lim.tmpfs_mb}m,mode=1777",
                   "/tmp": f"size={lim.tmpfs_mb}m,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True, environment={},
            labels={"rlvr.sandbox": "1"})
        with self._lock:
            self._containers.append(c)
        return c

    def _replace(self, c) -> None:
        try:
            c.remove(force=True)
        except Exception:
            pass
        with self._lock:
            if c in self._containers:
                self._containers.remove(c)
        self._idle.put(self._create())

    def run(self, program: str, stdin: str = "", timeout_s: float = 10.0,
            limits: Limits | None = None) -> ExecResult:
        limits = limits or self.limits
        t0 = time.monotonic()
        c = self._idle.get()
        argv = (["python3", "-I", "-c", BOOT, str(float(timeout_s)), str(limits.output_bytes)]
                + _chunks(program.encode("utf-8", "surrogatepass")) + ["--"]
                + _chunks(stdin.encode("utf-8", "surrogatepass")))
        box: dict = {}

        def call() -> None:
            try:
                box["res"] = c.exec_run(argv, user=self.user, workdir="/sandbox", demux=True)
            except Exception as e:
                box["err"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(timeout_s + 30)  # the bootstrap enforces timeout_s; this guards the bootstrap
        if t.is_alive() or "err" in box:
            self._replace(c)
            why = "the container did not answer" if t.is_alive() else str(box["err"])
            return ExecResult("sandbox_error", None, "", why, time.monotonic() - t0)
        self._idle.put(c)
        out, err = box["res"].output
        try:
            r = json.loads((out or b"").decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return ExecResult("sandbox_error", None, "", (err or b"").decode("utf-8", "replace")[-500:],
                              time.monotonic() - t0)
        info = {"backend": self.name, "image": self.image}
        code = r["code"]
        if r["why"] == "timeout":
            status = "timeout"
        elif r["why"] == "output_limit":
            status = "output_limit"
        elif code < 0:
            status = "killed"
        else:
            status = "ok" if code == 0 else "error"
        return ExecResult(status, code if code >= 0 else None, r["out"], r["err"],
                          time.monotonic() - t0, r["why"] == "output_limit",
                          -code if code < 0 else None, info)

    def check(self) -> dict:
        probe = self.run("print('ok')", timeout_s=30)
        return {"backend": self.name, "image": self.image, "works": probe.stdout.strip() == "ok",
                "status": probe.status, "layers": {"network_none": True, "read_only_root": True,
                                                   "cap_drop_all": True, "pids_limit": True,
                                                   "memory_limit": True, "non_root_user": True}}

    def close(self) -> None:
        with self._lock:
            containers, self._containers = self._containers, []
        for c in containers:
            try:
                c.remove(force=True)
            except Exception:
                pass
