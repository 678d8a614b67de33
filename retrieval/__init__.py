"""Retrieval (``rlvr.retrieval``): corpora, BM25 and dense indexes, the HTTP server and client."""
