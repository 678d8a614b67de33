"""Passage corpora: streaming readers and an on-disk passage store.

Two JSONL row shapes are read (optionally gzip-compressed, ``.jsonl.gz``):

* Search-R1 / FlashRAG: ``{"id": "1", "contents": "\\"Title\\"\\nPassage text"}`` — the title is the
  first line of ``contents`` and is usually wrapped in double quotes (wiki-18 does this).
* plain: ``{"id": "1", "title": "Title", "text": "Passage text"}``.

Rows are streamed one line at a time, never loaded into a list, so a 21M-passage Wikipedia dump
costs no more memory than a toy corpus. A malformed row names its file and line.

:class:`PassageStore` keeps the passages of a built index on disk (``passages.jsonl`` plus an
``offsets.npy`` table) and reads them back through a memory map, so loading an index does not
read the corpus into memory; a lookup is one slice of the map.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """A corpus row that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text.

    ``contents`` is the Search-R1 wire form (title line, newline, text) that the server returns and
    that :func:`rlvr.retrieval.base.format_passages` splits again; ``title`` is unquoted.
    """

    id: str
    title: str
    text: str
    contents: str

    @classmethod
    def from_contents(cls, id: str, contents: str) -> "Passage":
        first, _, rest = contents.partition("\n")
        return cls(id=str(id), title=_unquote(first), text=rest, contents=contents)

    @classmethod
    def from_title_text(cls, id: str, title: str, text: str) -> "Passage":
        # FlashRAG quotes the title line; keeping that convention makes both row shapes format
        # identically in the Doc block a Search-R1 policy was trained on.
        contents = f'"{title}"\n{text}' if title else f"\n{text}"
        return cls(id=str(id), title=title, text=text, contents=contents)

    def to_json(self) -> dict:
        """The document as Search-R1's server returns it."""
        return {"id": self.id, "contents": self.contents}


def _unquote(title: str) -> str:
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        return title[1:-1]
    return title


def parse_row(row: object, where: str) -> Passage:
    """One decoded JSON row → :class:`Passage`; ``where`` (``file:line``) goes into errors."""
    if not isinstance(row, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "id" not in row:
        raise CorpusError(f"{where}: missing field 'id' (expected {{'id', 'contents'}} or "
                          f"{{'id', 'title', 'text'}})")
    pid = row["id"]
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise CorpusError(f"{where}: field 'id' must be a string or integer, got {pid!r}")
    if "contents" in row:
        contents = row["contents"]
        if not isinstance(contents, str):
            raise CorpusError(f"{where}: field 'contents' must be a string, got "
                              f"{type(contents).__name__}")
        return Passage.from_contents(str(pid), contents)
    if "text" in row:
        title, text = row.get("title", ""), row["text"]
        if not isinstance(text, str):
            raise CorpusError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise CorpusError(f"{where}: field 'title' must be a string, got "
                              f"{type(title).__name__}")
        return Passage.from_title_text(str(pid), title, text)
    raise CorpusError(f"{where}: row has neither 'contents' nor 'text' (fields: {sorted(row)})")


def _open_text(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_corpus(path: str | os.PathLike, *, on_error: str = "raise",
                progress: Callable[[int], None] | None = None) -> Iterator[Passage]:
    """Stream the passages of a JSONL corpus file.

    on_error: ``raise`` stops at the first bad row with a :class:`CorpusError` naming file and
    line; ``skip`` logs each bad row (file:line and why) and goes on, with a count at the end.
    progress: called with the number of bytes consumed after each line (for a progress bar).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    skipped = 0
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if progress is not None:
                progress(len(raw))
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise CorpusError(f"{where}: not valid JSON ({e})") from None
                passage = parse_row(row, where)
            except CorpusError as e:
                if on_error == "raise":
                    raise
                skipped += 1
                log.warning("skipping bad corpus row: %s", e)
                continue
            yield passage
    if skipped:
        log.warning("%s: skipped %d bad row(s)", path, skipped)


class PassageStore:
    """Passages of a built index, on disk, addressed by their position (the index's doc id).

    Files: ``passages.jsonl`` (one ``{"id", "contents"}`` per line, in index order) and
    ``offsets.npy`` (int64, n + 1 byte offsets). Reading goes through ``mmap``, which is safe to
    share between the server's worker threads.
    """

    DATA, OFFSETS = "passages.jsonl", "offsets.npy"

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        data, offsets = self.dir / self.DATA, self.dir / self.OFFSETS
        for f in (data, offsets):
            if not f.is_file():
                raise FileNotFoundError(f"passage store file missing: {f}")
        self._offsets = np.load(offsets, mmap_mode="r")
        self._fh = open(data, "rb")
        size = os.fstat(self._fh.fileno()).st_size
        # mmap of an empty file is an error; an empty store simply has no passages
        self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> Passage:
        if not 0 <= i < len(self):
            raise IndexError(f"passage {i} out of range (store has {len(self)})")
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        row = json.loads(self._map[start:end])
        return Passage.from_contents(row["id"], row["contents"])

    def __iter__(self) -> Iterator[Passage]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._fh.close()

    @classmethod
    def writer(cls, directory: str | os.PathLike) -> "PassageStoreWriter":
        return PassageStoreWriter(directory)


class PassageStoreWriter:
    """Appends passages while an index is being built (the corpus is read once)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.dir / PassageStore.DATA, "wb")
        self._offsets = [0]

    def add(self, passages: Iterable[Passage]) -> None:
        for p in passages:
            line = (json.dumps(p.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
            self._fh.write(line)
            self._offsets.append(self._offsets[-1] + len(line))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def close(self) -> PassageStore:
        self._fh.close()
        np.save(self.dir / PassageStore.OFFSETS, np.asarray(self._offsets, dtype=np.int64))
        return PassageStore(self.dir)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` items (the last may be shorter)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
