"""A verifier shipped by another package, found through the ``rlvr.verifiers`` entry point group
and used by name through ``rlvr verify``; and rlvr next to PyPI's ``verifiers`` package."""

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from rlvr.core.registry import Registry

PLUGIN = '''
"""A throwaway rlvr verifier plugin."""
import rlvr


def shout(completion, answer, **info):
    """Reward 1 when the completion is the answer in capitals."""
    ok = completion.strip() == str(answer).upper()
    return rlvr.Score(float(ok), ok, reason="shouted" if ok else "not shouted")
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "rlvr-shout"
version = "0.1.0"

[project.entry-points."rlvr.verifiers"]
shout = "rlvr_shout:shout"
'''


def write_package(root: Path) -> Path:
    src = root / "rlvr-shout"
    (src / "rlvr_shout").mkdir(parents=True)
    (src / "rlvr_shout" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(PYPROJECT)
    return src


def env_with(path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built and installed by pip into a private target folder (not the shared venv),
    so it is visible exactly where that folder is on the path, and deleted with tmp_path."""
    root = tmp_path_factory.mktemp("plugin")
    src = write_package(root)
    target = root / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-index", "--quiet", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr
    assert list(target.glob("rlvr_shout-0.1.0.dist-info/entry_points.txt"))
    return target


def test_entry_point_is_discovered(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    eps = entry_points(group="rlvr.verifiers")
    assert "shout" in {ep.name for ep in eps}
    reg = Registry("verifier", "rlvr.verifiers")  # a fresh registry: discovery at first lookup
    assert reg._loaded is False
    fn = reg.get("shout")
    assert fn("PARIS", "paris").reward == 1.0
    sys.modules.pop("rlvr_shout", None)


def test_rlvr_verify_uses_the_plugin_by_name(installed, tmp_path):
    env = env_with(installed)
    cmd = [sys.executable, "-m", "rlvr", "verify", "shout", "--completion", "PARIS",
           "--answer", "paris"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"reward": 1.0, "correct": True, "parts": {},
                                    "reason": "shouted"}
    # a whole predictions file through the pool, in order
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"completion": "PARIS", "answer": "paris"}\n'
                     '{"completion": "paris", "answer": "paris"}\n')
    r = subprocess.run([sys.executable, "-m", "rlvr", "verify", "shout", "--input", str(preds)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["reward"] for line in r.stdout.splitlines()] == [1.0, 0.0]
    # and `rlvr list` shows its description
    r = subprocess.run([sys.executable, "-m", "rlvr", "list"], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert "Reward 1 when the completion is the answer in capitals." in r.stdout


def test_bad_rows_name_file_and_line(tmp_path):
    preds = tmp_path / "bad.jsonl"
    preds.write_text('{"completion": "x", "answer": "y"}\n{"answer": "y"}\n')
    r = subprocess.run([sys.executable, "-m", "rlvr", "verify", "qa_em", "--input", str(preds)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert f"{preds}:2: field 'completion'" in r.stderr


def test_coexists_with_pypi_verifiers_package(tmp_path):
    # A stand-in for PyPI's top-level `verifiers` package on the path.
    fake = tmp_path / "verifiers"
    fake.mkdir()
    (fake / "__init__.py").write_text('NAME = "pypi-verifiers"\n')
    code = textwrap.dedent("""
        import verifiers, rlvr.verifiers, rlvr.verifiers.qa
        from rlvr.core.scoring import verify
        assert verifiers is not rlvr.verifiers
        assert verifiers.NAME == "pypi-verifiers"
        assert not hasattr(rlvr.verifiers, "NAME")
        print(verifiers.__file__)
        print(rlvr.verifiers.__file__)
        print(verify("qa_em", "<answer>x</answer>", "x").reward)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env_with(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pypi_file, ours, reward = r.stdout.split()
    assert Path(pypi_file).parent == fake
    assert Path(ours).parent != fake
    assert reward == "1.0"


def test_train_with_the_plugin_verifier_from_a_config(installed, tmp_path):
    """`rlvr train my.yaml` whose environment is rewarded by the plugin: the part is logged."""
    import yaml

    from rlvr.core.config import resolve_config_path

    bundled = resolve_config_path("grpo_calculator")
    settings = yaml.safe_load(bundled.read_text())
    settings["data.train"] = str(bundled.parent / settings["data.train"])  # relative to the config
    settings = {k: v for k, v in settings.items() if not k.startswith(("env.verifiers", "run.steps"))}
    settings.update({"env.verifiers": {"shout": 1.0, "format_r1": 0.1}, "run.steps": 2,
                     "run.progress": False})
    cfg = tmp_path / "my.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    env = {**env_with(installed), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-m", "rlvr", "train", str(cfg), "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert any(k.startswith("reward/shout") for k in rows[0]), sorted(rows[0])
    assert any(k.startswith("reward/format_r1") for k in rows[0]), sorted(rows[0])
