"""Task sources: bundled generators by name, or JSONL / parquet files.

A file row needs a prompt (``prompt``, ``question`` or ``messages``) and an answer (``answer`` or
``golden_answers``); every other field goes to ``Task.info``. Task ids are ``"<source>:<row>"`` so
two datasets never share one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from rlvr.types import Task

#: name → generator(n, seed) of bundled toy tasks
BUNDLED_TASKS: dict[str, Callable[[int, int], list[Task]]] = {}


def bundled_task(name: str):
    def add(fn):
        if name in BUNDLED_TASKS:
            raise ValueError(f"bundled task {name!r} is already registered")
        BUNDLED_TASKS[name] = fn
        return fn
    return add


@bundled_task("calculator")
def calculator_tasks(n: int = 256, seed: int = 0) -> list[Task]:
    """Two-operand integer arithmetic, e.g. 'What is 12*7?'."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice("+-*")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        tasks.append(Task(f"What is {a}{op}{b}?", str(value), id=f"calculator:{i}"))
    return tasks


def load_tasks(spec: str, limit: int = 0, seed: int = 0) -> list[Task]:
    """A bundled task name (``calculator``) or a ``.jsonl`` / ``.json`` / ``.parquet`` file."""
    if spec in BUNDLED_TASKS:
        tasks = BUNDLED_TASKS[spec](limit or 256, seed)
        return tasks[:limit] if limit else tasks
    path = Path(spec)
    if not path.exists():
        known = ", ".join(sorted(BUNDLED_TASKS))
        raise FileNotFoundError(f"task source {spec!r} is neither a file nor a bundled task ({known})")
    rows = read_rows(path)
    tasks = []
    for i, row in enumerate(rows):
        if limit and len(tasks) >= limit:
            break
        tasks.append(row_to_task(row, f"{path.stem}:{i}", where=f"{path} row {i}"))
    return tasks


def read_rows(path: Path) -> list[Any]:
    """The rows of a .jsonl, .json (a list) or .parquet file; a bad line is named by its number."""
    if path.suffix == ".parquet":
        import datasets

        try:
            return list(datasets.Dataset.from_parquet(str(path)))
        except Exception as e:
            raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        return data
    # JSONL is parsed line by line rather than through Arrow: a bad line is then reported by its
    # number, and rows whose golden_answers mix types do not break a schema inferred from the first.
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not valid JSON ({e.msg})") from None
    return rows


def row_to_task(row: dict, task_id: str, where: str = "") -> Task:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    prompt = row.get("messages") or row.get("prompt") or row.get("question")
    if prompt is None:
        raise ValueError(f"{where}: no 'prompt', 'question' or 'messages' field")
    if "answer" in row:
        answer = row["answer"]
    elif "golden_answers" in row:
        answer = row["golden_answers"]
    else:
        raise ValueError(f"{where}: no 'answer' or 'golden_answers' field")
    info = {k: v for k, v in row.items()
            if k not in ("messages", "prompt", "question", "answer", "golden_answers", "id")}
    try:
        return Task(prompt, answer, info, id=task_id)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
