"""Attacks a reward-seeking model may write, each of which the local sandbox must contain.

Every test runs the hostile program, checks the run's result, then (through the autouse fixture)
checks the host: no process of a sandbox uid is left, the verifier's working directory and
environment are unchanged, and the sandbox still runs a normal program afterwards. Nothing here
touches the host outside pytest's tmp dirs. Add an attack here whenever you think of one.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from rlvr.verifiers.sandbox import Limits
from rlvr.verifiers.sandbox.local import LocalBackend

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="local sandbox is Linux-only")

UID_BASE = 200000


@pytest.fixture(scope="module", params=["auto", "bwrap"])
def sbx(request):
    # every attack against the built-in isolation, and against bubblewrap when it is installed
    # (apt-get install -y bubblewrap)
    if request.param == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap not installed")
    b = LocalBackend(request.param, uid_base=UID_BASE)
    yield b
    b.close()


def sandbox_pids() -> list[int]:
    """Host processes running as a sandbox uid (every run gets uid >= UID_BASE when root)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) >= UID_BASE:
                                pids.append(int(entry))
                            break
            except (OSError, ValueError):
                pass
    return pids


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(f.read().split("\n")[:3])
    except OSError:
        return "?"


@pytest.fixture(autouse=True)
def host_unaffected(sbx):
    cwd = os.getcwd()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    yield
    deadline = time.monotonic() + 5.0
    while sandbox_pids() and time.monotonic() < deadline:  # the kernel reaps asynchronously
        time.sleep(0.05)
    left = {p: _comm(p) for p in sandbox_pids()}
    assert left == {}, f"sandboxed processes outlived their run: {left}"
    assert os.getcwd() == cwd
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == env
    after = sbx.run("print(6 * 7)", timeout_s=10)
    assert (after.status, after.stdout) == ("ok", "42\n"), after


def _layers(sbx) -> dict:
    return sbx.run("pass").info["layers"]


def test_all_layers_active_here(sbx):
    # the machine these tests were written for runs as root with unshare allowed: every layer on
    layers = _layers(sbx)
    if os.geteuid() != 0:
        pytest.skip("not root: the uid drop layer is unavailable")
    names = ["pid_ns", "net_ns", "mount_ns", "ipc_ns", "fs_root", "uid_drop", "rlimits"]
    if sbx.isolation == "auto":
        names.append("user_ns")  # bwrap as root skips it: the private uid would be unmapped
    for name in names:
        assert layers.get(name), f"layer {name} inactive: {layers}"


def test_network_outside_unreachable(sbx):
    prog = ("import socket\ns = socket.socket()\ns.settimeout(2)\n"
            "try:\n    s.connect(('1.1.1.1', 53)); print('CONNECTED')\n"
            "except OSError as e:\n    print('blocked', e.errno)\n")
    r = sbx.run(prog, timeout_s=10)
    assert r.status == "ok" and "blocked" in r.stdout and "CONNECTED" not in r.stdout, r


def test_network_loopback_of_host_unreachable(sbx):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    got = []

    def accept():
        try:
            got.append(srv.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    prog = ("import socket\ns = socket.socket()\ns.settimeout(1)\n"
            f"try:\n    s.connect(('127.0.0.1', {port})); s.sendall(b'x'); print('CONNECTED')\n"
            "except OSError as e:\n    print('blocked', e.errno)\n")
    r = sbx.run(prog, timeout_s=10)
    t.join()
    srv.close()
    assert "CONNECTED" not in r.stdout and "blocked" in r.stdout, r
    assert got == [], "the host's listener received a connection from the sandbox"


def test_write_outside_scratch(sbx, tmp_path):
    import uuid

    target = tmp_path / "escaped.txt"
    tmp_path.chmod(0o777)  # writable by anyone: only the sandbox's walls can stop the write
    host_tmp = f"/tmp/rlvr-escape-{uuid.uuid4().hex}"  # only tmp dirs are ever targeted
    prog = (f"import os\nfor p in [{str(target)!r}, {host_tmp!r}]:\n"
            "    try:\n        open(p, 'w').write('pwned'); print('wrote', p)\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n"
            "for d in ('/', '/usr', '/tmp', '/sandbox'):\n"
            "    print(d, 'ro' if os.statvfs(d).f_flag & os.ST_RDONLY else 'rw')\n")
    try:
        r = sbx.run(prog, timeout_s=10)
        assert r.status == "ok", r
        assert not target.exists()
        assert not Path(host_tmp).exists()  # the private /tmp may take the write, the host's not
        lines = r.stdout.splitlines()
        # the system is read-only; only the private /tmp and /sandbox tmpfs are writable
        assert lines[-4:] == ["/ ro", "/usr ro", "/tmp rw", "/sandbox rw"], r.stdout
    finally:
        Path(host_tmp).unlink(missing_ok=True)


def test_read_project_home_and_secret_files(sbx, tmp_path):
    import rlvr

    project_file = Path(rlvr.__file__).resolve().parent.parent / "pyproject.toml"
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-1234")
    secret.chmod(0o644)  # world-readable on the host: only the private root hides it
    tmp_path.chmod(0o755)
    paths = [str(project_file), str(secret), str(Path.home() / ".bashrc"), "/root/.bashrc",
             "/proc/1/environ", "/etc/passwd"]
    prog = (f"for p in {paths!r}:\n"
            "    try:\n        print('READ', p, open(p).read()[:40].replace(chr(10), ' '))\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n")
    r = sbx.run(prog, timeout_s=10)
    assert r.status == "ok", r
    assert "READ" not in r.stdout, r.stdout
    assert "TOPSECRET" not in r.stdout


def test_fork_bomb(sbx):
    prog = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t = time.monotonic()
    r = sbx.run(prog, timeout_s=3, limits=Limits(processes=32))
    assert r.status in ("timeout", "killed", "error"), r
    assert time.monotonic() - t < 10


def test_memory_bomb(sbx):
    # one huge allocation and a growing list: both stop at RLIMIT_AS (256 MiB here)
    for prog in ("x = bytearray(8 * 2**30)", "l = []\nwhile True:\n    l.append(b'x' * 2**20)"):
        r = sbx.run(prog, timeout_s=10, limits=Limits(memory_mb=256))
        assert r.status in ("error", "killed"), r
        assert "MemoryError" in r.stderr or r.status == "killed", r


def test_infinite_loop_times_out(sbx):
    t = time.monotonic()
    r = sbx.run("while True:\n    pass", timeout_s=1.0)
    assert r.status == "timeout", r
    assert time.monotonic() - t < 4.0  # 1 s limit + kill + teardown


def test_sleep_past_timeout(sbx):
    t = time.monotonic()
    r = sbx.run("import time\nprint('start', flush=True)\ntime.sleep(60)\nprint('end')", timeout_s=1.0)
    assert r.status == "timeout" and "start" in r.stdout and "end" not in r.stdout, r
    assert time.monotonic() - t < 4.0


def test_printing_gigabytes(sbx):
    cap = 64 * 1024
    t = time.monotonic()
    r = sbx.run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout_s=20,
                limits=Limits(output_bytes=cap))
    assert r.status == "output_limit" and r.truncated, r.status
    assert len(r.stdout) <= cap
    assert time.monotonic() - t < 10  # stopped at the cap, not at the timeout


def test_stderr_flood_capped(sbx):
    cap = 16 * 1024
    r = sbx.run("import sys\nfor _ in range(10**6):\n    sys.stderr.write('e' * 1000)",
                timeout_s=20, limits=Limits(output_bytes=cap))
    assert r.status == "output_limit" and len(r.stderr) <= cap


def test_daemon_cannot_outlive_run(sbx):
    # double fork + setsid + ignore SIGTERM/SIGHUP: the classic daemon. It must die with the run.
    prog = ("import os, signal, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "        signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
            "        time.sleep(30)\n    os._exit(0)\n"
            "print('parent done')\n")
    r = sbx.run(prog, timeout_s=5)
    assert r.status == "ok" and "parent done" in r.stdout, r
    # the autouse fixture checks that no sandbox-uid process is left


def test_daemon_holding_stdout_does_not_hang_the_verifier(sbx):
    prog = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n"
            "print('bye')\n")
    t = time.monotonic()
    r = sbx.run(prog, timeout_s=10)
    assert r.status == "ok" and r.stdout == "bye\n", r
    assert time.monotonic() - t < 5


def test_killing_parent_and_everything(sbx):
    me = os.getpid()
    prog = ("import os, signal\n"
            "for target in (os.getppid(), 1, -1, 0, " + str(me) + "):\n"
            "    try:\n        os.kill(target, signal.SIGKILL)\n    except OSError as e:\n"
            "        print('denied', target, e.errno)\n"
            "print('still here')\n")
    r = sbx.run(prog, timeout_s=5)
    # the program may take itself down (kill(-1) / kill(0) include it); the host must not notice
    assert r.status in ("ok", "killed", "error"), r
    assert os.getpid() == me  # we are alive (the fixture then checks the sandbox still works)


def test_changing_working_directory_of_verifier(sbx):
    r = sbx.run("import os\nos.chdir('/')\nprint(os.getcwd())", timeout_s=5)
    assert r.stdout == "/\n"  # its own cwd changed; the fixture checks ours did not


def test_environment_secrets_not_inherited(sbx, monkeypatch):
    monkeypatch.setenv("RLVR_TEST_SECRET_TOKEN", "hunter2-secret")
    r = sbx.run("import os\nprint(sorted(os.environ.items()))\n"
                "try:\n    print(open('/proc/self/environ').read())\nexcept OSError:\n    pass\n",
                timeout_s=5)
    assert r.status == "ok", r
    assert "hunter2" not in r.stdout and "RLVR_TEST_SECRET" not in r.stdout


def test_signal_verifier_by_pid(sbx):
    me = os.getpid()
    r = sbx.run(f"import os, signal\ntry:\n    os.kill({me}, signal.SIGTERM)\n    print('sent')\n"
                "except OSError as e:\n    print('denied', e.errno)", timeout_s=5)
    assert "sent" not in r.stdout  # not even visible from the sandbox's pid namespace


def test_privilege_escalation(sbx):
    prog = ("import os\nfor f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot('/tmp')):\n"
            "    try:\n        f(); print('ESCALATED')\n    except OSError as e:\n        print('denied', e.errno)\n"
            "print(os.getuid())")
    r = sbx.run(prog, timeout_s=5)
    assert "ESCALATED" not in r.stdout, r
    if os.geteuid() == 0:
        assert int(r.stdout.split()[-1]) != 0


def test_filling_the_disk(sbx):
    # file size limit 4 MiB, tmpfs 8 MiB: writes stop there and nothing lands on the host's disk
    prog = ("import os\nn = 0\ntry:\n    with open('big', 'wb') as f:\n"
            "        for _ in range(1000):\n            f.write(b'x' * 2**20); f.flush(); n += 1\n"
            "except OSError as e:\n    print('stopped', n, e.errno)\n")
    r = sbx.run(prog, timeout_s=10, limits=Limits(file_size_mb=4, tmpfs_mb=8))
    assert r.status in ("ok", "killed", "error"), r  # SIGXFSZ may end it outright
    if r.status == "ok":
        assert int(r.stdout.split()[1]) <= 8, r.stdout


def test_open_file_limit(sbx):
    r = sbx.run("fs = []\ntry:\n    while True: fs.append(open('/dev/null'))\n"
                "except OSError as e:\n    print(len(fs), e.errno)", timeout_s=5,
                limits=Limits(open_files=32))
    assert r.status == "ok" and int(r.stdout.split()[0]) < 32, r


def test_runs_do_not_see_each_other(sbx):
    # two concurrent runs: the first waits for a file the second would have to write into its /tmp
    from rlvr.verifiers.sandbox import Job, SandboxPool

    waiter = ("import os, time\nfor _ in range(20):\n    if os.path.exists('/tmp/shared'): break\n"
              "    time.sleep(0.05)\nprint(os.path.exists('/tmp/shared'))")
    writer = "open('/tmp/shared', 'w').write('hi')\nprint('wrote')"
    with SandboxPool(sbx, workers=2) as pool:
        a, b = pool.run_many([Job(waiter, timeout_s=5), Job(writer, timeout_s=5)])
    assert b.stdout == "wrote\n" and a.stdout == "False\n", (a, b)
