"""The package's shape: every documented name imports, the docs name files that exist, the root
holds no concern of its own, no file grows past 500 lines, and imports sit at the top of files
(except where they keep an optional heavy dependency, or a CLI command's start-up, lazy)."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = [REPO / d for d in ("rlvr", "environments", "verifiers", "retrieval")]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HEAVY_OPTIONAL = ("vllm", "docker", "faiss", "peft", "wandb", "sentence_transformers")
# Modules whose own top-level imports pull one of HEAVY_OPTIONAL (or whose callers keep them lazy
# on purpose): importing them inside a function is the point.
LAZY_ON_PURPOSE = {"rlvr.engines.vllm", "rlvr.verifiers.sandbox.docker_backend"}


def _sources():
    for root in PACKAGE_DIRS:
        yield from sorted(root.rglob("*.py"))


def _doc_code_lines():
    for doc in DOCS:
        in_code = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
                continue
            if in_code or line.startswith("    "):
                yield doc, n, line.strip()


def test_every_documented_import_resolves():
    """``from rlvr.x import a, b`` / ``import rlvr.x`` in the README's and docs' code blocks."""
    pattern = re.compile(r"^(?:from (rlvr[\w.]*) import ([\w, ]+)|import (rlvr[\w.]*))\s*(?:#.*)?$")
    checked, broken = 0, []
    for doc, n, line in _doc_code_lines():
        m = pattern.match(line)
        if not m:
            continue
        module = m.group(1) or m.group(3)
        names = [x.strip() for x in (m.group(2) or "").split(",") if x.strip()]
        checked += 1
        try:
            mod = importlib.import_module(module)
            for name in names:
                if not hasattr(mod, name):
                    importlib.import_module(f"{module}.{name}")  # a submodule
        except Exception as e:  # noqa: BLE001 - every failure is reported with its place
            broken.append(f"{doc.name}:{n}: {line}  ({type(e).__name__}: {e})")
    assert checked >= 10, "the docs' import lines were not found"
    assert not broken, "\n".join(broken)


def test_every_documented_source_path_exists():
    pattern = re.compile(r"\b((?:rlvr|environments|verifiers|retrieval|bench|tests)/[\w/]+\.py)\b")
    missing = sorted({f"{doc.name}: {p}" for doc in DOCS + [REPO / "CONTRIBUTING.md"] if doc.exists()
                      for p in pattern.findall(doc.read_text()) if not (REPO / p).exists()})
    assert not missing, "\n".join(missing)


def test_the_public_surface():
    import rlvr

    for name in ("verifier", "environment", "algorithm"):
        assert callable(getattr(rlvr, name)), name
    for name in ("Trajectory", "Score", "Task", "Turn", "ToolCall", "Environment", "StepResult"):
        assert isinstance(getattr(rlvr, name), type), name
    assert importlib.import_module("rlvr.testing").ScriptedEngine


def test_the_package_root_holds_only_cross_cutting_modules():
    root = {p.stem for p in (REPO / "rlvr").glob("*.py")}
    assert root <= {"__init__", "__main__", "testing"}, sorted(root)


def test_no_source_file_over_500_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for p in _sources()
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, long


def test_own_imports_sit_at_the_top_of_files():
    """An rlvr import inside a function hides an edge of the dependency graph. Allowed: the CLI's
    commands (``rlvr list`` starts in a fraction of a second because each command imports its
    implementation when it runs) and the modules that carry an optional heavy dependency."""
    hidden = []
    for path in _sources():
        rel = path.relative_to(REPO)
        if rel.parts[:2] == ("rlvr", "cli"):
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlvr"):
                    targets = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                elif isinstance(node, ast.Import):
                    targets = {a.name for a in node.names if a.name.startswith("rlvr")}
                else:
                    continue
                if targets and not targets & LAZY_ON_PURPOSE:
                    hidden.append(f"{rel}:{node.lineno} in {fn.name}(): {sorted(targets)[0]}")
    assert not hidden, "\n".join(hidden)


#: folder → the folders its top-level imports may reach (docs/architecture.md, "The folders").
LAYERS = {
    "core": set(),
    "engines": {"core"},
    "rewards": {"core"},
    "retrieval": {"core"},
    "verifiers": {"core"},
    "data": {"core"},
    "environments": {"core", "data", "retrieval", "rewards", "verifiers"},
    "rollout": {"core", "engines", "rewards"},
    "algorithms": {"core"},
    "learners": {"core", "engines", "rewards", "data", "rollout", "algorithms"},
    "eval": {"core", "engines", "rewards", "data", "rollout", "environments", "verifiers",
             "retrieval"},
    "jobs": {"core", "engines", "rewards", "data", "rollout", "algorithms", "learners", "eval",
             "environments", "verifiers", "retrieval", "testing"},
    "viewer": {"core", "rollout", "learners"},
    "testing": {"core", "engines"},
}


def _folder(path: Path) -> str:
    rel = path.relative_to(REPO).parts
    if rel[0] != "rlvr":
        return rel[0]  # a plugin folder: environments, verifiers, retrieval
    return rel[1] if len(rel) > 2 else Path(rel[1]).stem


def _imported_folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rlvr" else None


def test_each_folder_imports_only_the_folders_below_it():
    """What a file may touch follows from its path: the layers of docs/architecture.md, read
    from every module's top-level imports (``if TYPE_CHECKING:`` imports are types only)."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    bad = []
    for path in _sources():
        folder = _folder(path)
        if folder not in LAYERS:  # the CLI and the package root may import anything
            continue
        assert f"`rlvr/{folder}/" in doc or f"`{folder}/`" in doc or folder == "testing", folder
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                target = _imported_folder(name or "")
                if target and target != folder and target not in LAYERS[folder] | {None}:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {folder} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("what", ["import rlvr", "every module"])
def test_no_heavy_optional_dependency_loads_on_import(what):
    code = "import rlvr" if what == "import rlvr" else (
        "import pkgutil, importlib\n"
        "for top in ('rlvr', 'rlvr.environments', 'rlvr.verifiers', 'rlvr.retrieval'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        "        if m.name != 'rlvr.__main__':\n"
        "            importlib.import_module(m.name)\n")
    code += f"\nimport sys; print([m for m in {HEAVY_OPTIONAL!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
