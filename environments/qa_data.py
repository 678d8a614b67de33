"""Open-domain QA benchmarks as :class:`rlvr.Task` lists: the FlashRAG / Search-R1 versions of NQ,
TriviaQA, PopQA, HotpotQA, 2WikiMultihopQA, MuSiQue and Bamboogle, and any JSONL / parquet file whose
rows have ``question`` and ``golden_answers``.

    load_qa("nq")                      # <data_dir>/nq/test.jsonl, else the hub
    load_qa("hotpotqa", limit=500)     # the dev split, as Search-R1 evaluates it
    load_qa("my_questions.jsonl")      # any file with the two fields

``Task.prompt`` is the bare question (the environment wraps it in its template), ``Task.answer`` the
list of gold strings, ``Task.id`` ``"<dataset>:<row>"`` with the 0-based row of the file, and
``Task.info["dataset"]`` the dataset name. A bad row raises a ``ValueError`` that names the file, the
row and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from rlvr.core.types import Task
from rlvr.data.rows import read_located_rows
from rlvr.verifiers.qa import normalize_answer

#: The FlashRAG collection on the Hugging Face hub: one folder per dataset, ``<split>.jsonl`` inside.
HUB_REPO = "RUC-NLPIR/FlashRAG_datasets"
#: Where local copies are looked up (``<dir>/<name>/<split>.jsonl`` and a few other layouts).
DATA_DIR_ENV = "RLVR_QA_DIR"


@dataclass(frozen=True)
class QASource:
    """Where one benchmark lives: its folder in :data:`HUB_REPO` and the split Search-R1 reports."""

    folder: str
    split: str
    multi_hop: bool = False


#: name → source. Search-R1 (Jin et al., 2025, Table 2) evaluates on the test split where one is
#: public and on dev otherwise (HotpotQA, 2Wiki and MuSiQue have no labelled test split).
QA_DATASETS: dict[str, QASource] = {
    "nq": QASource("nq", "test"),
    "triviaqa": QASource("triviaqa", "test"),
    "popqa": QASource("popqa", "test"),
    "hotpotqa": QASource("hotpotqa", "dev", multi_hop=True),
    "2wikimultihopqa": QASource("2wikimultihopqa", "dev", multi_hop=True),
    "musique": QASource("musique", "dev", multi_hop=True),
    "bamboogle": QASource("bamboogle", "test", multi_hop=True),
}

_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def load_qa(spec: str, *, split: str | None = None, data_dir: str | os.PathLike | None = None,
            limit: int = 0, hub: bool | None = None) -> list[Task]:
    """One benchmark by name (see :data:`QA_DATASETS`) or a JSONL / parquet file → tasks.

    A name is looked up in ``data_dir`` (default ``$RLVR_QA_DIR``, then ``./data``) and, when no
    local copy exists and ``hub`` is not False, fetched from the hub through ``datasets``.
    ``limit`` keeps the first rows (0 = all); ``split`` overrides the benchmark's default split.
    """
    path = Path(spec)
    if path.suffix in _FILE_SUFFIXES or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"QA file {spec} does not exist")
        return located_rows_to_tasks(read_located_rows(path), path.stem, limit)
    source = QA_DATASETS.get(spec)
    if source is None:
        known = ", ".join(QA_DATASETS)
        raise KeyError(f"unknown QA dataset {spec!r}; known: {known} (or give a .jsonl / .parquet file)")
    split = split or source.split
    local = find_local(spec, split, data_dir)
    if local is not None:
        return located_rows_to_tasks(read_located_rows(local), spec, limit)
    if hub is False:
        raise FileNotFoundError(
            f"no local copy of {spec} ({split}) under {_data_dirs(data_dir)} and the hub is off; "
            f"put {source.folder}/{split}.jsonl there (from {HUB_REPO})")
    rows, where = _read_hub(source, split, spec)
    return rows_to_tasks(rows, spec, where, limit)


def load_qa_many(specs: str | Iterable[str], **kw: Any) -> dict[str, list[Task]]:
    """``"nq,hotpotqa,my.jsonl"`` → ``{"nq": [...], "hotpotqa": [...], "my": [...]}`` (in order)."""
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    named: dict[str, str] = {}
    for spec in specs:  # names first: a duplicate fails before anything is read
        name = Path(spec).stem if Path(spec).suffix in _FILE_SUFFIXES else spec
        if name in named:
            raise ValueError(f"dataset {name!r} is named twice ({named[name]} and {spec})")
        named[name] = spec
    if not named:
        raise ValueError("no dataset named: give e.g. nq,hotpotqa or a .jsonl file")
    return {name: load_qa(spec, **kw) for name, spec in named.items()}


def rows_to_tasks(rows: Iterable[Any], dataset: str, where: str, limit: int = 0) -> list[Task]:
    """Rows with ``question`` and ``golden_answers`` → tasks; the first bad row raises, naming it
    as ``<where> row N`` (counted from 1: rows of a table, which has no lines)."""
    return located_rows_to_tasks(((f"{where} row {n}", row) for n, row in enumerate(rows, 1)),
                                 dataset, limit)


def located_rows_to_tasks(rows: Iterable[tuple[str, Any]], dataset: str, limit: int = 0) -> list[Task]:
    """``(FILE:LINE, row)`` pairs (:func:`rlvr.data.rows.read_located_rows`) → tasks; the first bad row
    raises, its message starting with its ``FILE:LINE``."""
    tasks = []
    for i, (at, row) in enumerate(rows):
        if limit and len(tasks) >= limit:
            break
        tasks.append(row_to_qa_task(row, dataset, i, at))
    return tasks


def row_to_qa_task(row: Any, dataset: str, index: int, at: str) -> Task:
    """One row → a task with id ``<dataset>:<index>``; ``at`` (``FILE:LINE``) starts every error."""
    if not isinstance(row, dict):
        raise ValueError(f"{at}: expected an object with 'question' and 'golden_answers', "
                         f"got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{at}: field 'question' must be non-empty text, got {question!r:.60}")
    if "golden_answers" not in row:
        raise ValueError(f"{at}: no 'golden_answers' field (a list of accepted answers)")
    golds = row["golden_answers"]
    if isinstance(golds, (str, int, float)) and not isinstance(golds, bool):
        golds = [golds]  # a single gold is accepted as a one-item list
    if not isinstance(golds, (list, tuple)) or not golds:
        raise ValueError(f"{at}: field 'golden_answers' must be a non-empty list of strings, "
                         f"got {row['golden_answers']!r:.60}")
    out = []
    for j, g in enumerate(golds):
        if isinstance(g, bool) or not isinstance(g, (str, int, float)):
            raise ValueError(f"{at}: golden_answers[{j}] must be text, got {type(g).__name__}")
        out.append(str(g))
    if not any(g.strip() for g in out):
        raise ValueError(f"{at}: every entry of 'golden_answers' is empty")
    if not any(normalize_answer(g) for g in out):
        # qa_em / qa_f1 drop golds that normalise to nothing (see rlvr.verifiers.qa), so such a
        # row could only ever score 0
        raise ValueError(f"{at}: every entry of 'golden_answers' ({out[:3]!r}) normalises to nothing "
                         f"under SQuAD normalisation (articles and punctuation are dropped), so no "
                         f"prediction can match it")
    return Task(question.strip(), out, {"dataset": dataset}, id=f"{dataset}:{index}")


# -- reading -------------------------------------------------------------------------------------

def _data_dirs(data_dir) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = [Path(os.environ[DATA_DIR_ENV])] if os.environ.get(DATA_DIR_ENV) else []
    return dirs + [Path("data")]


def find_local(name: str, split: str, data_dir=None) -> Path | None:
    """The first of ``<dir>/<name>/<split>.{jsonl,parquet}``, ``<dir>/<name>_<split>.*`` and
    ``<dir>/<name>.*`` that exists (FlashRAG's download layout first)."""
    folder = QA_DATASETS[name].folder if name in QA_DATASETS else name
    for d in _data_dirs(data_dir):
        for stem in (f"{folder}/{split}", f"{name}_{split}", name):
            for suffix in (".jsonl", ".parquet"):
                p = d / f"{stem}{suffix}"
                if p.is_file():
                    return p
    return None


def _read_hub(source: QASource, split: str, name: str) -> tuple[list[Any], str]:
    import datasets

    data_file = f"{source.folder}/{split}.jsonl"
    try:
        ds = datasets.load_dataset(HUB_REPO, data_files={split: data_file}, split=split)
    except Exception as e:
        raise FileNotFoundError(
            f"{name}: no local copy under {_data_dirs(None)} and {HUB_REPO}/{data_file} could not be "
            f"loaded ({type(e).__name__}: {str(e)[:200]}); download it and pass --data-dir") from None
    return list(ds), f"{HUB_REPO}/{data_file}"
