"""The installed package: import hygiene, the console script, the listing."""

import json
import subprocess
import sys


def test_import_rlvr_loads_no_heavy_dependency():
    code = ("import sys, rlvr; heavy = [m for m in ('vllm', 'docker', 'faiss', "
            "'sentence_transformers', 'torch', 'transformers') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_and_list():
    out = subprocess.run([sys.executable, "-m", "rlvr", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "list" in out.stdout
    out = subprocess.run([sys.executable, "-m", "rlvr", "list", "--json"], capture_output=True,
                         text=True, check=True)
    table = json.loads(out.stdout)
    assert "calculator" in table["environments"]
    assert set(table) == {"environments", "verifiers", "algorithms", "configs"}


def test_plugin_folders_are_rlvr_subpackages():
    import rlvr.environments
    import rlvr.retrieval
    import rlvr.verifiers

    for mod in (rlvr.environments, rlvr.verifiers, rlvr.retrieval):
        assert mod.__name__.startswith("rlvr.")
