"""The retrieval HTTP server, speaking Search-R1's wire format so its clients work unchanged.

    POST /retrieve  {"queries": ["q1", ...], "topk": 3, "return_scores": true}
      → {"result": [[{"document": {"id": "...", "contents": "\\"Title\\"\\ntext"}, "score": 1.2},
                     ...], ...]}                       one list per query, best first
      without return_scores (the default): {"result": [[{"id": ..., "contents": ...}, ...], ...]}
    GET /health     → {"status": "ok", "kind": "bm25", "num_passages": N}

Bad requests get a 4xx JSON body ``{"error": "<what is wrong>"}``: 400 for malformed JSON, 422
for a body of the wrong shape, 413 for too many queries in one request. ``topk`` defaults to
the server's ``default_topk`` (3, as Search-R1's) and is capped at the corpus size.

Searches run in FastAPI's thread pool under one lock: index libraries are not all safe for
concurrent calls, and on a few CPU cores parallel searches would only contend. Batch queries in
one request (the client does) to get throughput.
"""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

from pydantic import BaseModel, Field

from rlvr.retrieval.base import Index

log = logging.getLogger(__name__)


class QueryRequest(BaseModel):
    """Search-R1's request body."""

    queries: list[str]
    topk: Optional[int] = Field(default=None, ge=1)
    return_scores: bool = False


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def create_app(index: Index, *, default_topk: int = 3, max_queries: int = 4096,
               max_topk: int = 1000):
    """A FastAPI app that answers Search-R1 retrieval requests from ``index``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="rlvr retriever", version="1")
    lock = threading.Lock()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
            return JSONResponse(status_code=400, content={
                "error": f"request body is not valid JSON: {ctx.get('error', 'parse error')}"})
        parts = []
        for e in errors:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={
            "error": "bad request: " + "; ".join(parts) +
                     ' (expected {"queries": [str, ...], "topk": int, "return_scores": bool})'})

    @app.get("/health")
    def health():
        return {"status": "ok", "kind": index.kind, "num_passages": len(index)}

    @app.post("/retrieve")
    def retrieve(req: QueryRequest):
        if len(req.queries) > max_queries:
            return JSONResponse(status_code=413, content={
                "error": f"{len(req.queries)} queries in one request; the limit is {max_queries}"})
        if req.topk is not None and req.topk > max_topk:
            return JSONResponse(status_code=422, content={
                "error": f"topk {req.topk} is above this server's limit of {max_topk}"})
        k = req.topk or default_topk
        with lock:
            results = index.search(req.queries, k)
        if req.return_scores:
            return {"result": [[{"document": h.passage.to_json(), "score": h.score} for h in hits]
                               for hits in results]}
        return {"result": [[h.passage.to_json() for h in hits] for hits in results]}

    return app


def _make_server(index: Index, host: str, port: int, log_level: str = "warning", **app_kw):
    import uvicorn

    config = uvicorn.Config(create_app(index, **app_kw), host=host, port=port,
                            log_level=log_level, access_log=False)
    return uvicorn.Server(config)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY, which accepted connections inherit on Linux.

    Without it a keep-alive client waits ~40 ms per request: the response goes out as two small
    writes (headers, body) and Nagle holds the second until the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def serve(index: Index, host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "info", **app_kw) -> None:
    """Run the server in the foreground until interrupted."""
    if host not in LOOPBACK:
        log.warning("retriever listening on %s: reachable from other machines; it has no "
                    "authentication", host)
    sock = _bind(host, port)
    try:
        _make_server(index, host, port, log_level=log_level, **app_kw).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def running_server(index: Index, host: str = "127.0.0.1", port: int = 0,
                   **app_kw) -> Iterator[str]:
    """Serve ``index`` from a background thread; yields the base URL and stops on exit.

    port 0 picks a free port (the socket is bound here, so there is no race between finding a
    port and binding it). Used by tests and the benchmark.
    """
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    server = _make_server(index, host, actual_port, **app_kw)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):  # ≤ 10 s for the server to come up
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.02)
        if not server.started:
            raise RuntimeError("retrieval server did not start")
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{actual_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
