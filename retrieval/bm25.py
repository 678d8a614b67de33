"""BM25 through ``bm25s`` (sparse scores precomputed at index time, so a query is a sum of a few
sparse rows).

Files beside ``index.json``: bm25s's own ``*.index.npy`` / ``params.index.json`` /
``vocab.index.json``, the tokenizer's ``vocab.tokenizer.json`` / ``stopwords.tokenizer.json``,
and the passage store. ``load`` memory-maps the score matrix (bm25s ``mmap=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rlvr.retrieval.base import Hit, Index, build_workdir, check_queries, read_meta
from rlvr.retrieval.corpus import Passage, PassageStore, batched

DEFAULTS = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "lower": True}


def _tokenizer(settings: dict):
    from bm25s.tokenization import Tokenizer

    stopwords = settings["stopwords"] or []
    return Tokenizer(lower=settings["lower"], stopwords=stopwords)


def _index_text(p: Passage) -> str:
    # title and body both count: the title is often the answer entity (wiki-18)
    return f"{p.title}\n{p.text}"


class BM25Index(Index):
    kind = "bm25"

    def __init__(self, store: PassageStore, settings: dict, retriever, tokenizer):
        super().__init__(store, settings)
        self._retriever = retriever
        self._tokenizer = tokenizer

    @classmethod
    def build(cls, passages: Iterable[Passage], *, workdir: str | os.PathLike | None = None,
              chunk_size: int = 10_000, progress: Callable[[int], None] | None = None,
              **settings) -> "BM25Index":
        """Index a stream of passages (read once: each chunk is written to the passage store
        and tokenised, and only its token ids are kept).

        settings: k1, b, method (bm25s: lucene | robertson | atire | bm25l | bm25+),
        stopwords ("en" or None), lower.
        """
        import bm25s
        from bm25s.tokenization import Tokenized

        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown bm25 setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        settings = {**DEFAULTS, **settings}
        tokenizer = _tokenizer(settings)
        writer = PassageStore.writer(build_workdir(workdir))
        ids: list[list[int]] = []
        for chunk in batched(passages, chunk_size):
            writer.add(chunk)
            ids.extend(tokenizer.tokenize([_index_text(p) for p in chunk], update_vocab=True,
                                          return_as="ids", show_progress=False))
            if progress is not None:
                progress(len(chunk))
        store = writer.close()
        if len(store) == 0:
            raise ValueError("cannot build an index from an empty corpus")
        retriever = bm25s.BM25(k1=settings["k1"], b=settings["b"], method=settings["method"])
        retriever.index(Tokenized(ids=ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
        return cls(store, settings, retriever, tokenizer)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        queries = check_queries(queries, k)
        if not queries:
            return []
        ids = self._tokenizer.tokenize(queries, update_vocab=False, return_as="ids",
                                       show_progress=False)
        known = self._retriever.unique_token_ids_set
        out = []
        for qids in ids:
            qids = [t for t in qids if t in known]
            if not qids:
                out.append([])
                continue
            scores = self._retriever.get_scores_from_ids(qids)  # (N,)
            # Zero score = no query term in the passage; like Lucene, return only real matches
            # rather than arbitrary filler (a query of only stopwords gets no passages). Taking
            # the top k among the matches also avoids a partition over the whole corpus.
            matched = np.flatnonzero(scores > 0)
            if len(matched) > k:
                matched = matched[np.argpartition(-scores[matched], k - 1)[:k]]
            # best first; equal scores in corpus order, so results are deterministic
            order = matched[np.lexsort((matched, -scores[matched]))]
            out.append([Hit(self.store[int(d)], float(scores[d])) for d in order])
        return out

    def _save_files(self, directory: Path) -> None:
        self._retriever.save(str(directory), show_progress=False)
        self._tokenizer.save_vocab(str(directory))
        self._tokenizer.save_stopwords(str(directory))

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> "BM25Index":
        import bm25s

        meta = read_meta(directory)
        settings = {**DEFAULTS, **meta.get("settings", {})}
        retriever = bm25s.BM25.load(str(directory), mmap=mmap, show_progress=False)
        tokenizer = _tokenizer(settings)
        tokenizer.load_vocab(str(directory))
        tokenizer.load_stopwords(str(directory))
        return cls(PassageStore(directory), settings, retriever, tokenizer)
