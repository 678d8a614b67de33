"""Dense retrieval: an :mod:`~rlvr.retrieval.encoders` encoder and a faiss inner-product index.

faiss structures (the ``faiss`` setting):

* ``flat`` — exact inner product (``IndexFlatIP``); with normalised vectors, cosine.
* ``hnsw`` — graph search (``IndexHNSWFlat``, inner-product metric); ``hnsw_m``,
  ``ef_construction`` and ``ef_search`` trade build time and recall for speed.
* ``ivf`` — inverted lists (``IndexIVFFlat``) trained by k-means on the corpus vectors; ``nlist``
  (0 = about 4·sqrt(n)) lists, ``nprobe`` of them visited per query.

Files beside ``index.json``: ``faiss.index``, the passage store, and ``encoder/`` for a tiny
encoder. faiss is imported lazily (the ``dense`` extra); loading memory-maps the index file where
faiss supports it for the structure (``IO_FLAG_MMAP_IFC``), and falls back to reading it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rlvr.retrieval.base import Hit, Index, build_workdir, check_queries, read_meta
from rlvr.retrieval.corpus import Passage, PassageStore, batched
from rlvr.retrieval.encoders import Encoder, make_encoder

log = logging.getLogger(__name__)

FAISS_KINDS = ("flat", "hnsw", "ivf")
INDEX_FILE = "faiss.index"
FAISS_DEFAULTS = {"faiss": "flat", "hnsw_m": 32, "ef_construction": 80, "ef_search": 64,
                  "nlist": 0, "nprobe": 8}


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("dense retrieval needs faiss: pip install 'rlvr[dense]' "
                          "(or pip install faiss-cpu)") from e
    return faiss


def _passage_text(p: Passage) -> str:
    return f"{p.title}\n{p.text}" if p.title else p.text


def _check_faiss_settings(faiss_kind: str, settings: dict) -> dict:
    if faiss_kind not in FAISS_KINDS:
        raise ValueError(f"faiss must be one of {FAISS_KINDS}, got {faiss_kind!r}")
    unknown = set(settings) - set(FAISS_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown dense setting(s) {sorted(unknown)}; known: "
                         f"{sorted(FAISS_DEFAULTS)}")
    return {**FAISS_DEFAULTS, **settings, "faiss": faiss_kind}


def _new_faiss_index(faiss_kind: str, dim: int, n: int, s: dict):
    faiss = _faiss()
    if faiss_kind == "flat":
        return faiss.IndexFlatIP(dim)
    if faiss_kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(s["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(s["ef_construction"])
        return index
    nlist = int(s["nlist"]) or max(1, int(4 * math.sqrt(n)))
    # k-means needs several points per centroid; a small corpus gets fewer lists, not an error
    nlist = max(1, min(nlist, n // 4 or 1))
    quantizer = faiss.IndexFlatIP(dim)
    # faiss's Python wrapper keeps `quantizer` alive as long as the IVF index references it
    return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)


def _apply_search_settings(index, s: dict) -> None:
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(s["ef_search"])
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = int(s["nprobe"])


class DenseIndex(Index):
    kind = "dense"

    def __init__(self, store: PassageStore, settings: dict, encoder: Encoder, faiss_index,
                 base_dir: Path | None = None):
        super().__init__(store, settings)
        self.encoder = encoder
        self.faiss_index = faiss_index
        self._base_dir = base_dir
        _apply_search_settings(faiss_index, settings)

    @classmethod
    def build(cls, passages: Iterable[Passage], *, encoder: str = "tiny", faiss: str = "flat",
              workdir: str | os.PathLike | None = None, chunk_size: int = 4096,
              progress: Callable[[int], None] | None = None, encoder_kw: dict | None = None,
              **faiss_settings) -> "DenseIndex":
        """Encode a stream of passages chunk by chunk and index the vectors.

        encoder: an encoder spec (``tiny``, ``static``, ``minilm``, a hub id or a directory);
        encoder_kw: its options (query_prefix, passage_prefix, pooling, normalize, max_length,
        batch_size, device); faiss: flat | hnsw | ivf; faiss_settings: hnsw_m, ef_construction,
        ef_search, nlist, nprobe.
        """
        fs = _check_faiss_settings(faiss, faiss_settings)
        base = build_workdir(workdir)
        enc = make_encoder(encoder, base_dir=base, **(encoder_kw or {}))
        writer = PassageStore.writer(base)
        chunks = []
        for chunk in batched(passages, chunk_size):
            writer.add(chunk)
            chunks.append(enc.encode([_passage_text(p) for p in chunk], "passage"))
            if progress is not None:
                progress(len(chunk))
        store = writer.close()
        if len(store) == 0:
            raise ValueError("cannot build an index from an empty corpus")
        vectors = np.concatenate(chunks)
        del chunks
        return cls._from_store(store, vectors, enc, fs, base)

    @classmethod
    def from_vectors(cls, passages: Iterable[Passage], vectors: np.ndarray, *,
                     encoder: str, faiss: str = "flat", workdir: str | os.PathLike | None = None,
                     encoder_kw: dict | None = None, **faiss_settings) -> "DenseIndex":
        """Index passages whose vectors were computed elsewhere (e.g. on a GPU, or once for
        several faiss structures). ``encoder`` must be the one that made them: queries are
        encoded with it."""
        fs = _check_faiss_settings(faiss, faiss_settings)
        base = build_workdir(workdir)
        enc = make_encoder(encoder, base_dir=base, **(encoder_kw or {}))
        writer = PassageStore.writer(base)
        writer.add(passages)
        store = writer.close()
        if vectors.ndim != 2 or len(vectors) != len(store) or vectors.shape[1] != enc.dim:
            raise ValueError(f"vectors of shape {vectors.shape} do not fit {len(store)} passages "
                             f"and the {enc.dim}-d encoder {encoder!r}")
        return cls._from_store(store, vectors, enc, fs, base)

    @classmethod
    def _from_store(cls, store: PassageStore, vectors: np.ndarray, enc: Encoder, fs: dict,
                    base: Path) -> "DenseIndex":
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
        index = _new_faiss_index(fs["faiss"], enc.dim, len(vectors), fs)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        settings = {**enc.settings(), **fs, "dim": enc.dim}
        return cls(store, settings, enc, index, base_dir=base)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        queries = check_queries(queries, k)
        if not queries:
            return []
        k_eff = min(k, len(self))
        q = self.encoder.encode(queries, "query")  # (Q, D)
        scores, ids = self.faiss_index.search(q, k_eff)  # (Q, k), -1 = no hit (HNSW/IVF)
        return [[Hit(self.store[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)]

    def _save_files(self, directory: Path) -> None:
        faiss = _faiss()
        faiss.write_index(self.faiss_index, str(directory / INDEX_FILE))
        src = self._base_dir / "encoder" if self._base_dir else None
        if src is not None and src.is_dir() and src.resolve() != (directory / "encoder").resolve():
            shutil.copytree(src, directory / "encoder", dirs_exist_ok=True)

    @classmethod
    def load(cls, directory: str | os.PathLike, **encoder_overrides) -> "DenseIndex":
        """encoder_overrides: e.g. ``device="cuda"`` or ``batch_size=256`` for query encoding."""
        faiss = _faiss()
        directory = Path(directory)
        meta = read_meta(directory)
        s = {**FAISS_DEFAULTS, **meta.get("settings", {})}
        if "encoder" not in s:
            raise ValueError(f"{directory / 'index.json'}: settings lack 'encoder'")
        path = str(directory / INDEX_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dense index file missing: {path}")
        try:
            index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:  # structure without mmap support in this faiss build
            index = faiss.read_index(path)
        enc_kw = {k: s[k] for k in ("query_prefix", "passage_prefix", "pooling", "normalize",
                                    "max_length") if k in s}
        enc_kw.update(encoder_overrides)
        enc = make_encoder(s["encoder"], base_dir=directory, **enc_kw)
        if enc.dim != index.d:
            raise ValueError(f"{directory}: encoder {s['encoder']!r} gives {enc.dim}-d vectors "
                             f"but the index holds {index.d}-d vectors")
        return cls(PassageStore(directory), s, enc, index, base_dir=directory)
