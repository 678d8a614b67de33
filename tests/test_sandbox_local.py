"""The local backend's interface: statuses, stdin/stdout, limits, pool, check and degradation."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

import pytest

from rlvr.verifiers.sandbox import STATUSES, Job, Limits, SandboxPool, SandboxUnavailable, make_backend
from rlvr.verifiers.sandbox import local as local_mod
from rlvr.verifiers.sandbox.local import LocalBackend

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="local sandbox is Linux-only")


@pytest.fixture(scope="module")
def sbx():
    b = LocalBackend()
    yield b
    b.close()


def test_stdin_stdout_and_result_fields(sbx):
    r = sbx.run("s = input()\nprint(s[::-1])\nimport sys; print('err', file=sys.stderr)", stdin="abc\n")
    assert (r.status, r.exit_code, r.stdout, r.stderr) == ("ok", 0, "cba\n", "err\n")
    assert r.duration_s > 0 and r.status in STATUSES
    d = r.to_dict()
    assert set(d) >= {"status", "exit_code", "stdout", "stderr", "duration_s"}


def test_exit_codes_and_errors(sbx):
    assert sbx.run("import sys; sys.exit(3)").exit_code == 3
    assert sbx.run("raise SystemExit('bye')").stderr == "bye\n"
    r = sbx.run("def f():\n    raise KeyError('k')\nf()")
    assert r.status == "error" and r.exit_code == 1
    # the traceback names the program's file and lines, not the launcher's
    assert 'File "/sandbox/main.py", line 3' in r.stderr and "_launcher" not in r.stderr
    assert r.stderr.strip().endswith("KeyError: 'k'")


def test_syntax_error_reported(sbx):
    r = sbx.run("def f(:\n    pass")
    assert r.status == "error" and "SyntaxError" in r.stderr


def test_signal_to_self_works(sbx):
    # the program is not its namespace's init, so its own default-action signals take effect
    r = sbx.run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nprint('survived')")
    assert r.status == "killed" and r.signal == 15 and r.stdout == ""
    r = sbx.run("import os\nos.abort()")
    assert r.status == "killed" and r.signal == 6


def test_signal_death_is_killed(sbx):
    # a segmentation fault (reading address 0) ends the program by SIGSEGV = 11
    r = sbx.run("import ctypes\nctypes.string_at(0)")
    assert r.status == "killed" and r.signal == 11


def test_cpu_limit_counts_as_timeout(sbx):
    # SIGXCPU after 1 CPU second; the wall-clock limit (30 s) is far away
    r = sbx.run("while True: pass", timeout_s=30, limits=Limits(cpu_s=1))
    assert r.status == "timeout" and r.signal == 24 and r.duration_s < 20, r


def test_atexit_and_threads_run_as_at_normal_exit(sbx):
    prog = ("import atexit, threading, time\natexit.register(lambda: print('atexit'))\n"
            "t = threading.Thread(target=lambda: (time.sleep(0.1), print('thread')))\nt.start()\n"
            "print('main')")
    assert sbx.run(prog).stdout == "main\nthread\natexit\n"


def test_unicode_and_large_stdin(sbx):
    data = "é✓\n" * 50000  # 300 kB in, echoed back
    r = sbx.run("import sys\nsys.stdout.write(sys.stdin.read())", stdin=data, timeout_s=10)
    assert r.status == "ok" and r.stdout == data


def test_output_cap_truncates(sbx):
    r = sbx.run("print('x' * 5000)", limits=Limits(output_bytes=1000))
    assert r.status == "output_limit" and r.truncated and len(r.stdout) == 1000


def test_scratch_removed(sbx, tmp_path):
    b = LocalBackend(scratch_root=str(tmp_path))
    try:
        assert b.run("open('f.txt', 'w').write('x')").status == "ok"
        assert list(tmp_path.iterdir()) == []
    finally:
        b.close()


def test_pool_runs_concurrently(sbx):
    # 4 programs sleeping 0.5 s each on 4 workers take about 0.5 s, not 2 s
    jobs = [Job(f"import time\ntime.sleep(0.5)\nprint({i})", timeout_s=10) for i in range(4)]
    with SandboxPool(sbx, workers=4) as pool:
        t = time.monotonic()
        results = pool.run_many(jobs)
        wall = time.monotonic() - t
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert wall < 1.8, wall


def test_check_reports_layers(sbx):
    c = sbx.check()
    assert c["works"] is True and c["backend"] == "local"
    assert set(c["layers"]) >= {"pid_ns", "net_ns", "mount_ns", "fs_root", "uid_drop", "rlimits"}


def test_degraded_layer_warns(monkeypatch, caplog):
    # isolation="none" stands in for a kernel without namespaces: the run works, with a warning
    monkeypatch.setattr(local_mod, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="rlvr.verifiers.sandbox.local"):
        b = LocalBackend("none")
        try:
            r = b.run("print('hi')")
        finally:
            b.close()
    assert r.status == "ok" and r.stdout == "hi\n"
    assert r.info["layers"]["net_ns"] is False
    assert any("no namespaces" in m for m in caplog.messages)


def test_bwrap_requested_but_missing(monkeypatch):
    from rlvr.verifiers.sandbox import bwrap

    monkeypatch.setattr(bwrap, "available", lambda: False)
    with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
        LocalBackend("bwrap")


@pytest.mark.skipif(not __import__("shutil").which("bwrap"), reason="bubblewrap not installed")
def test_bwrap_isolation_runs():
    b = LocalBackend("bwrap")
    r = b.run("import os, socket\nprint(input())\n"
              "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\nexcept OSError:\n"
              "    print('no net')\nprint(os.getuid() != 0)", stdin="hi")
    b.close()
    assert r.status == "ok" and r.stdout == "hi\nno net\nTrue\n", r
    assert r.info["layers"]["bwrap"] and r.info["layers"]["uid_drop"] == (os.geteuid() == 0)


def test_links_only_where_the_target_is_bound(tmp_path):
    real = tmp_path / "real"
    (real / "bin").mkdir(parents=True)
    (tmp_path / "inside").symlink_to(real / "bin")  # resolves into a bound directory
    (tmp_path / "outside").symlink_to("/etc")  # resolves outside every bind: must stay a bind
    (tmp_path / "parent").symlink_to(real)  # another bind lies under it: must stay a bind
    binds = [str(real), str(tmp_path / "inside"), str(tmp_path / "outside"),
             str(tmp_path / "parent"), str(tmp_path / "parent" / "bin")]
    assert local_mod._links(binds) == {str(tmp_path / "inside"): "real/bin"}


@pytest.mark.parametrize("isolation", ["auto", "bwrap"])
def test_linked_bind_is_read_only_and_resolves(tmp_path, isolation):
    if isolation == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap not installed")
    real = tmp_path / "real"
    real.mkdir()
    (real / "data.txt").write_text("seen")
    (tmp_path / "ln").symlink_to(real)
    tmp_path.chmod(0o755)  # traversable by the program's private uid
    b = LocalBackend(isolation, extra_binds=(str(real), str(tmp_path / "ln")))
    assert b.links[str(tmp_path / "ln")] == "real"
    prog = (f"import os\nln = {str(tmp_path / 'ln')!r}\nprint(os.readlink(ln))\n"
            "print(open(ln + '/data.txt').read())\n"
            "for act in (lambda: open(ln + '/new', 'w'), lambda: os.unlink(ln)):\n"
            "    try:\n        act()\n        print('changed')\n"
            "    except OSError as e:\n        print(e.strerror)\n")
    r = b.run(prog)
    b.close()
    # writing through the link hits the read-only bind; removing the link itself is refused too
    # (its directory belongs to root inside the sandbox)
    out = r.stdout.splitlines()
    assert out[:3] == ["real", "seen", "Read-only file system"], r
    assert out[3] in ("Read-only file system", "Permission denied"), r
    assert (real / "data.txt").read_text() == "seen" and (tmp_path / "ln").is_symlink()


def test_zygote_restarts_after_dying(sbx):
    assert sbx.run("print(1)").stdout == "1\n"
    sbx._zygote.kill()
    sbx._zygote.wait()
    assert sbx.run("print(2)").stdout == "2\n"


def test_unknown_backend_and_isolation():
    with pytest.raises(ValueError, match="known: local, docker"):
        make_backend("nope")
    with pytest.raises(ValueError, match="isolation"):
        LocalBackend("weird")


def test_environment_is_minimal(sbx):
    r = sbx.run("import os\nprint(sorted(os.environ))")
    assert r.stdout == "['HOME', 'LANG', 'PATH', 'TMPDIR']\n"
    assert os.environ.get("PATH")  # ours is untouched


def test_cli_check_and_run(tmp_path, capsys):
    import json

    from rlvr.cli import main

    assert main(["sandbox", "check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["works"] is True and report["layers"]["rlimits"] is True
    prog, inp = tmp_path / "p.py", tmp_path / "in.txt"
    prog.write_text("print(int(input()) * 3)")
    inp.write_text("14")
    assert main(["sandbox", "run", str(prog), "--stdin", str(inp), "--timeout", "5"]) == 0
    out = json.loads(capsys.readouterr().out)  # one JSON object: 14 * 3 = 42
    assert (out["status"], out["exit_code"], out["stdout"]) == ("ok", 0, "42\n")
    assert set(out) >= {"status", "exit_code", "stdout", "stderr", "duration_s"}
    assert main(["sandbox", "run", str(tmp_path / "missing.py")]) == 2
    assert "no program file" in capsys.readouterr().err
    prog.write_text("import time\ntime.sleep(10)")
    assert main(["sandbox", "run", str(prog), "--timeout", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "timeout"


@pytest.mark.skipif(not __import__("shutil").which("bwrap"), reason="bubblewrap not installed")
def test_auto_falls_back_to_bwrap_when_namespaces_refused(monkeypatch):
    from rlvr.verifiers.sandbox.base import ExecResult

    b = LocalBackend()
    refused = ExecResult("ok", 0, "", "", 0.01, info={"layers": {"pid_ns": False, "rlimits": True}})
    monkeypatch.setattr(b, "_launch", lambda *a, **k: refused)  # as on a kernel that says no
    assert b.run("pass") is refused
    r = b.run("print('via bwrap')")  # the next run goes through bubblewrap
    b.close()
    assert r.stdout == "via bwrap\n" and r.info["layers"]["bwrap"] is True
