"""``rlvr list`` describes the built-ins from their source, so it does not import torch (issue 16:
it took ~9 s), and what it prints is what the loaded registries hold."""

import json
import subprocess
import sys

from rlvr.core.registry import ALGORITHMS, ENVIRONMENTS, VERIFIERS, describe


def test_rlvr_list_imports_no_heavy_dependency():
    code = ("import contextlib, io, sys\n"
            "from rlvr.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['list']) == 0\n"
            "print([m for m in ('torch', 'transformers', 'datasets', 'numpy', 'omegaconf') "
            "if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_descriptions_read_from_source_match_the_loaded_objects():
    # in a fresh process nothing is imported, so catalog() must read every built-in from source;
    # then the registries are loaded and the objects' own docstrings must say the same
    code = ("import json, sys\n"
            "from rlvr.core.registry import ALGORITHMS, ENVIRONMENTS, VERIFIERS, describe\n"
            "regs = (ENVIRONMENTS, VERIFIERS, ALGORITHMS)\n"
            "static = [r.catalog() for r in regs]\n"
            "assert not any(m in sys.modules for r in regs for m in r.builtin_modules)\n"
            "loaded = [({n: describe(o) for n, o in r.items()}, r.broken()) for r in regs]\n"
            "print(json.dumps([static, loaded]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    static, loaded = json.loads(out.stdout)
    assert static == loaded
    for described, broken in loaded:
        assert described and all(described.values()) and broken == {}
    # once loaded, the listing comes from the objects themselves
    for registry in (ENVIRONMENTS, VERIFIERS, ALGORITHMS):
        assert registry.catalog() == ({n: describe(o) for n, o in registry.items()}, {})


def test_listing_content_and_bundled_configs(capsys):
    from rlvr.cli import main
    from rlvr.cli.list_cmd import bundled_configs
    from rlvr.core.config import BUNDLED_CONFIGS

    assert bundled_configs() == BUNDLED_CONFIGS
    assert main(["list", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == {"environments", "verifiers", "algorithms", "configs"}
    assert {"calculator", "search", "code"} <= set(table["environments"])
    assert {"grpo", "ppo", "dpo", "sft"} <= set(table["algorithms"])
    assert table["verifiers"]["qa_em"].startswith("Exact match of the last <answer>")
    assert "search_world" in table["configs"]


def test_a_registration_the_source_cannot_describe_imports_its_module(tmp_path, monkeypatch):
    (tmp_path / "rlvr_test_reg.py").write_text(
        'from rlvr.core.registry import Registry\n'
        'REG = Registry("thing", "rlvr.no_such_group", ("rlvr_test_static", "rlvr_test_dynamic"))\n'
        'thing = REG.register\n')
    (tmp_path / "rlvr_test_static.py").write_text(
        'from rlvr_test_reg import thing\n\n'
        '@thing("decorated")\n'
        'def a():\n    """A decorated function."""\n\n'
        'class B:\n    """A class registered by a call."""\n\n'
        'thing("called")(B)\n')
    (tmp_path / "rlvr_test_dynamic.py").write_text(
        'from rlvr_test_reg import thing\n\n'
        'class C:\n    pass\n\n'
        'def make():\n    c = C()\n    c.__doc__ = "Made at import time."\n    return c\n\n'
        'thing("made")(make())\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    from rlvr_test_reg import REG

    try:
        described, _ = REG.catalog()
        assert described == {"decorated": "A decorated function.",
                             "called": "A class registered by a call.",
                             "made": "Made at import time."}
        assert "rlvr_test_static" not in sys.modules  # read, not imported
        assert "rlvr_test_dynamic" in sys.modules  # `make()` is only described by running it
        assert {n: describe(o) for n, o in REG.items()} == described  # the lookup agrees
    finally:
        for m in ("rlvr_test_reg", "rlvr_test_static", "rlvr_test_dynamic"):
            sys.modules.pop(m, None)
