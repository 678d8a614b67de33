"""The Docker backend.

Tests marked ``docker`` need a reachable engine and skip with the reason otherwise. The rest check
the backend's own logic without an engine: a fake client whose containers execute the in-container
bootstrap inside the local sandbox (which, like a container, has a private pid namespace, /sandbox
and /tmp — so the bootstrap's "kill every process of this user" stays inside it).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from rlvr.verifiers.sandbox import Limits, SandboxUnavailable

docker = pytest.importorskip("docker", reason="docker SDK not installed (pip install 'rlvr[docker]')")


def _engine_reason() -> str | None:
    try:
        docker.from_env(timeout=3).ping()
        return None
    except Exception as e:
        return f"no Docker engine reachable: {type(e).__name__}"


ENGINE_MISSING = _engine_reason()


def test_missing_engine_is_reported(monkeypatch):
    def broken(**kw):
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", broken)
    from rlvr.verifiers.sandbox.docker_backend import DockerBackend

    with pytest.raises(SandboxUnavailable, match="no Docker engine reachable"):
        DockerBackend()


class _FakeContainer:
    """Runs ``exec_run`` argv (python3 -I -c BOOT args...) in the local sandbox."""

    def __init__(self, local, kwargs):
        self.local, self.kwargs, self.removed = local, kwargs, False

    def exec_run(self, argv, user=None, workdir=None, demux=False):
        assert argv[:3] == ["python3", "-I", "-c"] and user == "65534:65534"
        wrapper = f"import sys\nsys.argv = {['boot'] + argv[4:]!r}\nexec({argv[3]!r})\n"
        r = self.local.run(wrapper, timeout_s=30)
        return SimpleNamespace(output=(r.stdout.encode(), r.stderr.encode()))

    def remove(self, force=False):
        self.removed = True


@pytest.fixture(scope="module")
def fake_backend():
    if not sys.platform.startswith("linux"):
        pytest.skip("the fake engine uses the local sandbox (Linux)")
    from rlvr.verifiers.sandbox.docker_backend import DockerBackend
    from rlvr.verifiers.sandbox.local import LocalBackend

    local = LocalBackend(site_packages=True)  # the bootstrap re-runs sys.executable: bind the venv
    made = []

    def run(image, command, **kwargs):
        made.append(kwargs)
        return _FakeContainer(local, kwargs)

    client = SimpleNamespace(ping=lambda: True, containers=SimpleNamespace(run=run))
    b = DockerBackend(image="python:3.11-slim", pool_size=2, client=client)
    b.made = made
    yield b
    b.close()
    local.close()


def test_containers_are_locked_down(fake_backend):
    kw = fake_backend.made[0]
    assert len(fake_backend.made) == 2  # the pool is created once, up front
    assert kw["network_mode"] == "none" and kw["read_only"] is True
    assert kw["cap_drop"] == ["ALL"] and "no-new-privileges" in kw["security_opt"]
    assert kw["mem_limit"] == "512m" and kw["pids_limit"] == 32
    assert set(kw["tmpfs"]) == {"/sandbox", "/tmp"} and kw["environment"] == {}


def test_bootstrap_runs_program_with_stdin(fake_backend):
    r = fake_backend.run("print(input()[::-1])", stdin="abc", timeout_s=10)
    assert (r.status, r.stdout, r.exit_code) == ("ok", "cba\n", 0), r


def test_bootstrap_statuses(fake_backend):
    assert fake_backend.run("import sys; sys.exit(4)").exit_code == 4
    t = fake_backend.run("while True: pass", timeout_s=1)
    assert t.status == "timeout", t
    flood = fake_backend.run("while True: print('x' * 1000)", limits=Limits(output_bytes=5000))
    assert flood.status == "output_limit" and len(flood.stdout) <= 5000
    killed = fake_backend.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert killed.status == "killed" and killed.signal == 9, killed


def test_large_program_is_chunked(fake_backend):
    # 300 kB of program text exceeds one argument's 128 KiB limit: it travels in chunks
    prog = "x = '" + "a" * 300_000 + "'\nprint(len(x))"
    r = fake_backend.run(prog, timeout_s=20)
    assert r.stdout == "300000\n", r


@pytest.mark.docker
@pytest.mark.skipif(ENGINE_MISSING is not None, reason=ENGINE_MISSING or "")
def test_real_engine_isolation():
    from rlvr.verifiers.sandbox.docker_backend import DockerBackend

    b = DockerBackend(pool_size=1)
    try:
        r = b.run("import socket, os\nprint(os.getuid())\ntry:\n"
                  "    socket.create_connection(('1.1.1.1', 53), timeout=2)\nexcept OSError:\n"
                  "    print('no net')\ntry:\n    open('/etc/x', 'w')\nexcept OSError:\n"
                  "    print('ro')", timeout_s=30)
        assert r.stdout.split() == ["65534", "no", "net", "ro"], r
        assert b.check()["works"] is True
    finally:
        b.close()
