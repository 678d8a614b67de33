"""The index interface every retriever implements, saved-index dispatch, and Search-R1 formatting.

An index directory always holds ``index.json``::

    {"kind": "bm25" | "dense" | "hybrid", "format_version": 1, "num_passages": N, "settings": {...}}

plus the kind's own files. :func:`load_index` reads ``kind`` and hands the directory to that
class's ``load``; nothing else needs to know which kind was built.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Protocol, Sequence, runtime_checkable

from rlvr.retrieval.corpus import Passage, PassageStore

FORMAT_VERSION = 1
META_FILE = "index.json"


class RetrievalError(RuntimeError):
    """Retrieval failed (server down, timeout, bad response). Environments turn it into an error
    observation for the episode instead of crashing the run."""


@dataclass(frozen=True)
class Hit:
    """One retrieved passage and its score (higher is better; scales differ between kinds)."""

    passage: Passage
    score: float


@runtime_checkable
class Retriever(Protocol):
    """Anything an environment can search: an in-process :class:`Index` or a ``RetrievalClient``."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]: ...


class Index(ABC):
    """A searchable collection of passages, batched: one call answers many queries."""

    kind: ClassVar[str]
    #: kind name → class, filled by subclasses so :func:`load_index` can dispatch
    _kinds: ClassVar[dict[str, type["Index"]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if getattr(cls, "kind", None):
            Index._kinds[cls.kind] = cls

    def __init__(self, store: PassageStore, settings: dict[str, Any]):
        self.store = store
        self.settings = dict(settings)

    def __len__(self) -> int:
        return len(self.store)

    @abstractmethod
    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits for each query, best first; a list per query (may be shorter than k)."""

    @abstractmethod
    def _save_files(self, directory: Path) -> None:
        """Write the kind's own files (the passage store and index.json are handled here)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | os.PathLike) -> "Index":
        """Read an index written by :meth:`save`."""

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index, its passages and its settings to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        copy_store(self.store, directory)
        self._save_files(directory)
        write_meta(directory, self.kind, len(self), self.settings)
        return directory

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(passages={len(self)}, settings={self.settings})"


def check_queries(queries: Sequence[str], k: int) -> list[str]:
    """Validate the arguments of ``search`` once, with a message a caller can act on."""
    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings, got a single string")
    queries = list(queries)
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise TypeError(f"queries[{i}] must be a string, got {type(q).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return queries


def copy_store(store: PassageStore, directory: Path) -> None:
    if store.dir.resolve() == directory.resolve():
        return
    for name in (PassageStore.DATA, PassageStore.OFFSETS):
        shutil.copyfile(store.dir / name, directory / name)


def write_meta(directory: Path, kind: str, num_passages: int, settings: dict) -> None:
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "num_passages": num_passages,
            "settings": settings}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not an index directory (no {META_FILE}): {directory}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ValueError(f"{path}: missing field 'kind'")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta['format_version']} is newer than this "
                         f"rlvr reads ({FORMAT_VERSION})")
    return meta


def load_index(directory: str | os.PathLike) -> Index:
    """Load any saved index, dispatching on the ``kind`` in its ``index.json``."""
    # the kinds register themselves when the package imports them (rlvr/retrieval/__init__.py)
    kind = read_meta(directory)["kind"]
    if kind not in Index._kinds:
        raise ValueError(f"{directory}: unknown index kind {kind!r}; known: "
                         f"{sorted(Index._kinds)}")
    return Index._kinds[kind].load(directory)


def build_workdir(workdir: str | os.PathLike | None) -> Path:
    """Where a build writes its passage store: the final index directory when the caller knows it
    (no copy on save), otherwise a fresh temporary directory."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="rlvr-index-"))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def format_passages(hits: Iterable[Hit]) -> str:
    """Search-R1's observation block: ``Doc 1(Title: <title line>) <text>`` one per line.

    The title line is used as stored (wiki-18 titles keep their quotes), matching the text a
    Search-R1 policy saw during training.
    """
    lines = []
    for i, hit in enumerate(hits, start=1):
        first, _, rest = hit.passage.contents.partition("\n")
        lines.append(f"Doc {i}(Title: {first}) {rest}\n")
    return "".join(lines)
