"""HTTP client for a Search-R1-compatible retrieval server (``rlvr serve`` or Search-R1's own).

``RetrievalClient.search(queries, k)`` returns the same ``list[list[Hit]]`` as an in-process
:class:`~rlvr.retrieval.base.Index`, so an environment takes either. Queries are sent in batches
of ``batch_size`` (one request per batch, at most ``max_concurrency`` in flight); a timeout,
connection error, 429 or 5xx is retried ``retries`` times with exponential backoff; anything
else that goes wrong raises :class:`RetrievalError` with the reason, which the environment turns
into an error observation for the episode.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlvr.retrieval.base import Hit, RetrievalError, check_queries
from rlvr.retrieval.corpus import Passage

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class RetrievalClient:
    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 2,
                 max_concurrency: int = 4, batch_size: int = 256, backoff_s: float = 0.2):
        """url: the server's base URL (``http://127.0.0.1:8000``) or its ``/retrieve`` URL, as
        Search-R1 configs write it."""
        import httpx

        if retries < 0 or max_concurrency < 1 or batch_size < 1 or timeout_s <= 0:
            raise ValueError("need retries >= 0, max_concurrency >= 1, batch_size >= 1 and "
                             "timeout_s > 0")
        url = url.rstrip("/")
        self.base_url = url[: -len("/retrieve")] if url.endswith("/retrieve") else url
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.max_concurrency, self.batch_size = max_concurrency, batch_size
        self._httpx = httpx
        self._http = httpx.Client(
            timeout=timeout_s, limits=httpx.Limits(max_connections=max_concurrency))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency,
                                        thread_name_prefix="retrieval")

    # -- public ----------------------------------------------------------------------------

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        queries = check_queries(queries, k)
        if not queries:
            return []
        batches = [queries[i:i + self.batch_size] for i in range(0, len(queries), self.batch_size)]
        if len(batches) == 1:
            return self._search_batch(batches[0], k)
        out: list[list[Hit]] = []
        for part in self._pool.map(lambda b: self._search_batch(b, k), batches):
            out.extend(part)
        return out

    def health(self) -> dict:
        body = self._request("GET", "/health", None)
        if not isinstance(body, dict):
            raise RetrievalError(f"{self.base_url}/health: unexpected response {body!r:.200}")
        return body

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()

    def __enter__(self) -> "RetrievalClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        body = self._request("POST", "/retrieve",
                             {"queries": queries, "topk": k, "return_scores": True})
        return _parse_result(body, len(queries), f"{self.base_url}/retrieve")

    def _request(self, method: str, path: str, payload: Any) -> Any:
        httpx = self._httpx
        url = self.base_url + path
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._http.request(method, url, json=payload)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g}s"
                continue
            except httpx.TransportError as e:
                last = f"connection failed ({type(e).__name__}: {e})"
                continue
            if resp.status_code in RETRYABLE_STATUS:
                last = f"HTTP {resp.status_code}: {_error_text(resp, 200)}"
                continue
            if resp.status_code >= 400:
                raise RetrievalError(f"{url}: HTTP {resp.status_code}: {_error_text(resp, 500)}")
            try:
                return resp.json()
            except ValueError:
                raise RetrievalError(f"{url}: response is not JSON: {resp.text[:200]!r}") from None
        raise RetrievalError(f"{url}: {last} (after {self.retries + 1} attempt(s))")


def _error_text(resp, limit: int) -> str:
    """The server's reason: the ``error`` field of ``rlvr serve``'s ``{"error": ...}`` body, else
    the start of whatever body came back (another server, a proxy's HTML page)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:limit]
    return resp.text[:limit]


def _parse_result(body: Any, n_queries: int, where: str) -> list[list[Hit]]:
    """Search-R1 response → hits, checking the shape so a wrong server fails clearly."""
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise RetrievalError(f"{where}: expected {{'result': [...]}}, got {str(body)[:200]}")
    result = body["result"]
    if len(result) != n_queries:
        raise RetrievalError(f"{where}: {len(result)} result lists for {n_queries} queries")
    out = []
    for qi, items in enumerate(result):
        if not isinstance(items, list):
            raise RetrievalError(f"{where}: result[{qi}] is not a list")
        hits = []
        for di, item in enumerate(items):
            doc, score = (item.get("document"), item.get("score")) if isinstance(item, dict) \
                else (None, None)
            if not isinstance(doc, dict) or not isinstance(doc.get("contents"), str) \
                    or not isinstance(score, (int, float)):
                raise RetrievalError(f"{where}: result[{qi}][{di}] is not "
                                     f"{{'document': {{'id', 'contents'}}, 'score'}}: "
                                     f"{str(item)[:200]}")
            hits.append(Hit(Passage.from_contents(str(doc.get("id", "")), doc["contents"]),
                            float(score)))
        out.append(hits)
    return out
