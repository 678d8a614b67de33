"""Retrieval (``rlvr.retrieval``): corpora, BM25 and dense indexes, the HTTP server and client.

    from rlvr.retrieval import read_corpus, BM25Index, load_index, format_passages
    index = BM25Index.build(read_corpus("wiki.jsonl"), workdir="idx/")
    index.save("idx/")
    hits = load_index("idx/").search(["who wrote hamlet"], k=3)   # list[list[Hit]]
    print(format_passages(hits[0]))

Heavy pieces (faiss, torch, bm25s, fastapi, httpx) load only when the class that needs them is used.
"""

from rlvr.retrieval.base import Hit, Index, RetrievalError, Retriever, format_passages, load_index
# The index kinds register themselves with Index on import, for load_index (numpy only at import:
# bm25s, faiss and the encoders' weights load when an index is built or loaded).
from rlvr.retrieval.bm25 import BM25Index
from rlvr.retrieval.corpus import CorpusError, Passage, PassageStore, read_corpus
from rlvr.retrieval.dense import DenseIndex
from rlvr.retrieval.hybrid import HybridIndex, rrf_fuse

_LAZY = {  # fastapi and httpx: loaded when the server or client is used
    "RetrievalClient": "rlvr.retrieval.client",
    "create_app": "rlvr.retrieval.server",
}

__all__ = ["Hit", "Index", "RetrievalError", "Retriever", "format_passages", "load_index",
           "BM25Index", "DenseIndex", "HybridIndex", "rrf_fuse",
           "CorpusError", "Passage", "PassageStore", "read_corpus", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlvr.retrieval' has no attribute {name!r}")
