"""Hybrid retrieval by reciprocal-rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009):

    score(d) = sum_i  w_i / (rrf_k + rank_i(d))        rank_i is 1-based; absent → no term

RRF needs no score calibration between BM25 (unbounded) and cosine similarity, which is why it
is the usual way to fuse them. Each part is asked for ``depth`` hits (at least k) per query, and
passages are identified by their corpus id.

Layout: ``index.json`` (kind ``hybrid``, settings with ``parts``, ``weights``, ``rrf_k``,
``depth``) and one sub-directory per part (``part0/``, ``part1/``, ...), each a complete index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from rlvr.retrieval.base import Hit, Index, check_queries, load_index, read_meta, write_meta


def rrf_fuse(rankings: Sequence[list[Hit]], k: int, *, weights: Sequence[float] | None = None,
             rrf_k: int = 60) -> list[Hit]:
    """Fuse several ranked hit lists for one query; ties keep first-seen order."""
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    passages = {}
    for w, hits in zip(weights, rankings):
        for rank, hit in enumerate(hits, start=1):
            pid = hit.passage.id
            scores[pid] = scores.get(pid, 0.0) + w / (rrf_k + rank)
            passages.setdefault(pid, hit.passage)
    order = sorted(scores, key=lambda pid: -scores[pid])  # stable: ties keep first-seen order
    return [Hit(passages[pid], scores[pid]) for pid in order[:k]]


class HybridIndex(Index):
    kind = "hybrid"

    def __init__(self, parts: Sequence[Index], *, weights: Sequence[float] | None = None,
                 rrf_k: int = 60, depth: int = 50):
        if len(parts) < 2:
            raise ValueError("a hybrid index fuses at least two indexes")
        weights = list(weights) if weights is not None else [1.0] * len(parts)
        if len(weights) != len(parts):
            raise ValueError(f"{len(weights)} weights for {len(parts)} parts")
        if rrf_k < 0 or depth < 1:
            raise ValueError(f"need rrf_k >= 0 and depth >= 1, got rrf_k={rrf_k}, depth={depth}")
        self.parts = list(parts)
        # passages come from the parts; the first part's store stands for the corpus
        super().__init__(self.parts[0].store, {
            "parts": [p.kind for p in self.parts], "weights": weights, "rrf_k": rrf_k,
            "depth": depth})

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        queries = check_queries(queries, k)
        if not queries:
            return []
        depth = max(k, self.settings["depth"])
        per_part = [part.search(queries, depth) for part in self.parts]  # (parts, Q, ≤depth)
        return [rrf_fuse([hits[q] for hits in per_part], k, weights=self.settings["weights"],
                         rrf_k=self.settings["rrf_k"]) for q in range(len(queries))]

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(self.parts):
            part.save(directory / f"part{i}")
        write_meta(directory, self.kind, len(self), self.settings)
        return directory

    def _save_files(self, directory: Path) -> None:  # save() is overridden: parts save themselves
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HybridIndex":
        directory = Path(directory)
        s = read_meta(directory).get("settings", {})
        n = len(s.get("parts", []))
        parts = [load_index(directory / f"part{i}") for i in range(n)]
        return cls(parts, weights=s.get("weights"), rrf_k=int(s.get("rrf_k", 60)),
                   depth=int(s.get("depth", 50)))

    def close(self) -> None:
        for part in self.parts:
            part.close()
