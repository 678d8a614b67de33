"""BFCL v4's single-turn categories read at run time from an installed ``bfcl-eval``.

    pip install --no-deps bfcl-eval      # its pins conflict; only its data files are read

``load_category("simple_python")`` gives one :class:`rlvr.core.types.Task` per test: the chat messages
of its (single) turn as the prompt, BFCL's ``ground_truth`` as the answer (``[]`` for the
irrelevance categories, which have none) and ``info = {"functions", "category", "bfcl_id"}``.
The data directory is ``$RLVR_BFCL_DIR`` when set, else ``bfcl_eval/data`` of the installed
package (found without importing it).

The training split. ``live_multiple`` (1,053 user-contributed tests, not in the default
evaluation set) is cut in two by row index: rows 0-799 are ``live_multiple:train``, rows 800 and
on are what ``live_multiple`` evaluates. Nothing else is trained on, so every other category is
evaluated whole and compares with the leaderboard. Write the split as a task file with

    python -m rlvr.data.bfcl export live_multiple:train runs/bfcl_train.jsonl
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from rlvr.core.types import Task

#: category → (first, end) row range held out for training; evaluation reads the other rows
TRAIN_SPLITS: dict[str, tuple[int, int]] = {"live_multiple": (0, 800)}
#: single-turn categories (AST-checked); multi-turn ones need their API classes run
SINGLE_TURN = ("simple_python", "simple_java", "simple_javascript", "multiple", "parallel",
               "parallel_multiple", "irrelevance", "live_simple", "live_multiple",
               "live_parallel", "live_parallel_multiple", "live_irrelevance", "live_relevance")
INSTALL_HINT = "pip install --no-deps bfcl-eval (or set RLVR_BFCL_DIR to its data directory)"


def data_dir() -> Path:
    """BFCL's data directory (``$RLVR_BFCL_DIR``, else the installed package's ``data/``)."""
    env = os.environ.get("RLVR_BFCL_DIR")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(f"RLVR_BFCL_DIR={env} is not a directory")
        return path
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"BFCL's data is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def load_category(spec: str, limit: int = 0) -> list[Task]:
    """Tasks of one category: ``name`` (its evaluation rows) or ``name:train`` (its training
    split, where :data:`TRAIN_SPLITS` defines one)."""
    name, _, split = spec.partition(":")
    if name not in SINGLE_TURN:
        raise ValueError(f"BFCL category {name!r} is not a single-turn category this reader "
                         f"knows; known: {', '.join(SINGLE_TURN)}")
    if split not in ("", "train"):
        raise ValueError(f"BFCL split {split!r} of {name}: only '{name}' or '{name}:train'")
    if split == "train" and name not in TRAIN_SPLITS:
        raise ValueError(f"BFCL category {name} has no training split; those with one: "
                         f"{', '.join(TRAIN_SPLITS)}")
    root = data_dir()
    path = root / f"BFCL_v4_{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such BFCL file ({INSTALL_HINT})")
    rows = _rows(path)
    answers_path = root / "possible_answer" / path.name
    answers = {r["id"]: r["ground_truth"] for r in _rows(answers_path)} if answers_path.exists() else {}
    first, end = TRAIN_SPLITS.get(name, (0, 0))
    keep = range(first, min(end, len(rows))) if split == "train" else \
        [i for i in range(len(rows)) if not first <= i < end]
    tasks = []
    for i in keep:
        row = rows[i]
        turns = row["question"]
        if len(turns) != 1:
            raise ValueError(f"{path}: test {row['id']} has {len(turns)} turns; a single-turn "
                             f"category has one")
        if "irrelevance" not in name and "relevance" not in name and row["id"] not in answers:
            raise ValueError(f"{answers_path}: no ground truth for test {row['id']}")
        tasks.append(Task(list(turns[0]), answers.get(row["id"], []),
                          {"functions": row["function"], "category": name, "bfcl_id": row["id"]},
                          id=f"bfcl_{row['id']}" + (":train" if split else "")))
        if limit and len(tasks) >= limit:
            break
    return tasks


def export(spec: str, out: str | Path, limit: int = 0) -> int:
    """Write a category's tasks as a task file (``messages``, ``answer``, ``info`` fields flat)."""
    tasks = load_category(spec, limit)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(json.dumps({"id": t.id, "messages": t.prompt, "answer": t.answer, **t.info},
                               ensure_ascii=False) + "\n")
    return len(tasks)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] != "export":
        sys.exit("usage: python -m rlvr.data.bfcl export CATEGORY[:train] OUT.jsonl [LIMIT]")
    n = export(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) == 5 else 0)
    print(f"wrote {n} tasks to {sys.argv[3]}")
