"""A plugin package whose entry point cannot be imported breaks only its own name (issue 14,
item 5): every other lookup works, asking for it fails with the import error, and ``rlvr list``
shows it as broken. The package is built and installed as in test_verifier_plugin_package.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.core.registry import PluginLoadError, Registry

PLUGIN = '''
"""Two throwaway rlvr verifier plugins, one of them broken."""
import rlvr


def whisper(completion, answer, **info):
    """Reward 1 when the completion is the answer in lower case."""
    ok = completion.strip() == str(answer).lower()
    return rlvr.Score(float(ok), ok)
'''

BROKEN = '''
import rlvr_no_such_dependency  # the plugin's own dependency is not installed


def shout(completion, answer, **info):
    return rlvr.Score(1.0, True)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "rlvr-broken-plugin"
version = "0.2.0"

[tool.setuptools]
packages = ["rlvr_whisper"]

[project.entry-points."rlvr.verifiers"]
whisper = "rlvr_whisper:whisper"
broken_shout = "rlvr_whisper.broken:shout"
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Installed by pip into a private target folder, visible only where it is put on the path."""
    root = tmp_path_factory.mktemp("broken_plugin")
    src = root / "rlvr-broken-plugin"
    (src / "rlvr_whisper").mkdir(parents=True)
    (src / "rlvr_whisper" / "__init__.py").write_text(PLUGIN)
    (src / "rlvr_whisper" / "broken.py").write_text(BROKEN)
    (src / "pyproject.toml").write_text(PYPROJECT)
    target = root / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-index", "--quiet", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr
    return target


def _run(args, installed: Path, cwd: Path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(installed)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "rlvr", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_only_the_broken_name_fails(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    reg = Registry("verifier", "rlvr.verifiers", ("rlvr.verifiers.qa",))
    assert reg.get("whisper")("paris", "PARIS").reward == 1.0  # the sibling plugin loads
    assert "whisper" in reg.names() and "broken_shout" not in reg.names()
    with pytest.raises(PluginLoadError) as e:
        reg.get("broken_shout")
    msg = str(e.value)
    assert "verifier plugin 'broken_shout'" in msg and "'rlvr_whisper.broken:shout'" in msg
    assert "rlvr-broken-plugin 0.2.0" in msg
    assert "ModuleNotFoundError: No module named 'rlvr_no_such_dependency'" in msg
    assert list(reg.broken()) == ["broken_shout"]
    with pytest.raises(KeyError, match=r"unknown verifier 'nope'; known: .*whisper.* \(broken: "
                                       r"broken_shout\)"):
        reg.get("nope")
    sys.modules.pop("rlvr_whisper", None)


def test_cli_lookups_and_listing_with_a_broken_plugin(installed, tmp_path):
    r = _run(["verify", "qa_em", "--completion", "<answer>Paris</answer>", "--answer", "paris"],
             installed, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reward"] == 1.0
    r = _run(["verify", "broken_shout", "--completion", "x", "--answer", "x"], installed, tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("rlvr verify: error: verifier plugin 'broken_shout'")
    assert "No module named 'rlvr_no_such_dependency'" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run(["list"], installed, tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("broken_shout"))
    assert "BROKEN: " in line and "No module named 'rlvr_no_such_dependency'" in line
    assert "Reward 1 when the completion is the answer in lower case." in r.stdout
    assert "qa_em" in r.stdout
