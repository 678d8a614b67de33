"""The retrieval HTTP server, speaking Search-R1's wire format so its clients work unchanged.

    POST /retrieve  {"queries": ["q1", ...], "topk": 3, "return_scores": true}
      → {"result": [[{"document": {"id": "...", "contents": "\\"Title\\"\\ntext"}, "score": 1.2},
                     ...], ...]}                       one list per query, best first
      without return_scores (the default): {"result": [[{"id": ..., "contents": ...}, ...], ...]}
    GET /health     → {"status": "ok", "kind": "bm25", "num_passages": N}

Every error is a JSON body ``{"error": "<what is wrong>"}``: 400 for a body that is not UTF-8
JSON (or nests too deeply to parse), 413 for a body over ``max_body_bytes``, 415 for a
Content-Type other than JSON, 422 for a body of the wrong shape or over a per-request limit
(queries, characters per query, topk), 503 when the request is not answered within
``deadline_s``, 404/405 for other paths and methods. ``topk`` defaults to the server's
``default_topk`` (3, as Search-R1's) and is capped at the corpus size.

One pathological request must not stall the others (issue 14: one 1 MiB query held the single
search lock for ~2 s and multiplied every other request's p99 by ten), hence:

* queries longer than ``max_query_words`` whitespace-separated words are cut to that many before
  scoring (BM25 sums one posting list per query term; a dense encoder truncates anyway);
* searches run on a pool of ``search_workers`` threads for index kinds whose search only reads
  shared state (BM25: bm25s's tokenizer with ``update_vocab=False`` and its score lookup only
  read); dense and hybrid indexes search one request at a time, because Hugging Face tokenizers
  are not safe to call from several threads (faiss CPU search alone would be);
* each request has a deadline covering its upload, queueing and search; a search still queued
  when its request gave up is skipped.
"""


import asyncio
import dataclasses
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from pydantic import BaseModel, Field, ValidationError

from rlvr.retrieval.base import Index

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: index kinds whose ``search`` may run in several threads at once (see the module docstring)
CONCURRENT_KINDS = frozenset({"bm25"})
EXPECTED = '{"queries": [str, ...], "topk": int, "return_scores": bool}'


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server. ``rlvr serve`` has a flag for each
    (``--max-body-bytes`` ...); the defaults leave room for Search-R1's batches (the client sends
    256 queries a request) while bounding what one request can cost."""

    #: request body size; larger bodies get 413 (4 MiB ≈ 4096 queries of 1,000 characters)
    max_body_bytes: int = 4 * 2**20
    #: queries in one request; more get 422
    max_queries: int = 4096
    #: characters in one query; a longer query gets 422 (a policy's query is a sentence)
    max_query_chars: int = 32_768
    #: queries with more whitespace-separated words are cut to this many before scoring
    max_query_words: int = 256
    #: the largest topk a request may ask for; more gets 422
    max_topk: int = 1000
    #: seconds from the request's arrival to its answer; past it the answer is 503 naming the
    #: deadline. Below RetrievalClient's 30 s timeout, so a client sees the server's reason.
    deadline_s: float = 20.0
    #: threads searching at once, for index kinds in CONCURRENT_KINDS (others use one)
    search_workers: int = 4

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"server limit {f.name} must be a positive number, got {value!r}")


class QueryRequest(BaseModel):
    """Search-R1's request body."""

    queries: list[str]
    topk: Optional[int] = Field(default=None, ge=1)
    return_scores: bool = False


class _Reject(Exception):
    """A request answered with an error status and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


def cut_query(query: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``query`` (itself when shorter).

    ``split(maxsplit=...)`` stops after ``max_words`` splits, so a 1 MiB query costs a scan to
    its ``max_words``-th word, not a split of the whole string.
    """
    parts = query.split(maxsplit=max_words)
    if len(parts) <= max_words:
        return query
    return " ".join(parts[:max_words])


def _check_content_type(value: str | None) -> None:
    # no header: parse as JSON, as FastAPI does (curl --data-binary sends none with -H '')
    if value is None:
        return
    media, _, params = value.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise _Reject(415, f"Content-Type {value!r} is not supported: send the body as JSON "
                           f"with Content-Type: application/json, {EXPECTED}")
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and \
                charset.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise _Reject(415, f"Content-Type {value!r}: the body must be UTF-8 JSON")


async def _read_body(request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _Reject(413, f"request body of {int(declared)} bytes is over this server's limit "
                           f"of {max_bytes} bytes (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():  # counted too: a chunked upload declares no length
        size += len(chunk)
        if size > max_bytes:
            raise _Reject(413, f"request body is over this server's limit of {max_bytes} bytes "
                               f"(--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise _Reject(400, f"request body is empty; expected {EXPECTED}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject(400, f"request body is not UTF-8: byte 0x{body[e.start]:02x} at offset "
                           f"{e.start}; send JSON encoded as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Reject(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column "
                           f"{e.colno}") from None
    except RecursionError:
        raise _Reject(400, f"request body nests arrays or objects too deeply to parse; expected "
                           f"{EXPECTED}") from None


def _validate(obj: Any, limits: ServerLimits):
    """JSON value → (queries, topk or None, return_scores), or a 422 naming every problem."""
    if not isinstance(obj, dict):
        raise _Reject(422, f"request body must be a JSON object {EXPECTED}, got a JSON "
                           f"{_json_type(obj)}")
    try:
        req = QueryRequest.model_validate(obj)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or 'body'}: "
                 f"{e.get('msg', 'invalid')}" for e in exc.errors()]
        raise _Reject(422, "bad request: " + "; ".join(parts) + f" (expected {EXPECTED})") \
            from None
    if len(req.queries) > limits.max_queries:
        raise _Reject(422, f"{len(req.queries)} queries in one request; this server's limit is "
                           f"{limits.max_queries} (--max-queries): send them in several requests")
    for i, q in enumerate(req.queries):
        if len(q) > limits.max_query_chars:
            raise _Reject(422, f"queries[{i}] is {len(q)} characters long; this server's limit "
                               f"is {limits.max_query_chars} (--max-query-chars)")
    if req.topk is not None and req.topk > limits.max_topk:
        raise _Reject(422, f"topk {req.topk} is above this server's limit of {limits.max_topk} "
                           f"(--max-topk)")
    return req.queries, req.topk, req.return_scores


def _json_type(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(obj), type(obj).__name__)


def create_app(index: Index, *, default_topk: int = 3, limits: ServerLimits | None = None,
               **limit_overrides):
    """A FastAPI app that answers Search-R1 retrieval requests from ``index``.

    limits: a :class:`ServerLimits`; keyword overrides of its fields (``max_queries=...``) are
    applied on top.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    limits = limits or ServerLimits()
    known = {f.name for f in dataclasses.fields(ServerLimits)}
    if set(limit_overrides) - known:
        raise TypeError(f"unknown server limit(s) {sorted(set(limit_overrides) - known)}; "
                        f"known: {sorted(known)}")
    limits = dataclasses.replace(limits, **limit_overrides)
    workers = limits.search_workers if index.kind in CONCURRENT_KINDS else 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="search")
    pending = [0]  # requests between arrival and answer, for the deadline message

    @asynccontextmanager
    async def lifespan(app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="rlvr retriever", version="1", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        # 404 / 405 from routing; Starlette's own body would be {"detail": ...}
        return JSONResponse(status_code=exc.status_code, headers=exc.headers, content={
            "error": f"{exc.detail}: {request.method} {request.url.path}; this server answers "
                     f"POST /retrieve and GET /health"})

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError):
        # no route takes a body model now; kept so a future parameter cannot answer off-format
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()]
        return JSONResponse(status_code=422, content={"error": "bad request: " + "; ".join(parts)})

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("retrieval request failed")
        return JSONResponse(status_code=500, content={
            "error": f"internal error while answering: {type(exc).__name__}: {exc}"})

    @app.get("/health")
    def health():
        return {"status": "ok", "kind": index.kind, "num_passages": len(index)}

    def search(queries: list[str], k: int, expires: float, return_scores: bool):
        if time.monotonic() >= expires:
            raise TimeoutError  # its request is answered (or about to be) with 503
        results = index.search(queries, k)
        if return_scores:
            return {"result": [[{"document": h.passage.to_json(), "score": h.score}
                                for h in hits] for hits in results]}
        return {"result": [[h.passage.to_json() for h in hits] for hits in results]}

    async def answer(request: Request, expires: float):
        _check_content_type(request.headers.get("content-type"))
        body = await _read_body(request, limits.max_body_bytes)
        queries, topk, return_scores = _validate(_parse_json(body), limits)
        queries = [cut_query(q, limits.max_query_words) for q in queries]
        loop = asyncio.get_running_loop()
        content = await loop.run_in_executor(pool, search, queries, topk or default_topk,
                                             expires, return_scores)
        return JSONResponse(content=content)

    @app.post("/retrieve")
    async def retrieve(request: Request):
        expires = time.monotonic() + limits.deadline_s
        pending[0] += 1
        try:
            # wait_for cancels the executor future on timeout: a search not yet started never
            # runs; one already running finishes in its thread and its result is dropped
            return await asyncio.wait_for(answer(request, expires), limits.deadline_s)
        except _Reject as e:
            return _error(e.status, e.message)
        except asyncio.TimeoutError:
            return _error(503, f"not answered within this server's deadline of "
                               f"{limits.deadline_s:g} s (--deadline-s); {pending[0]} request(s) "
                               f"were in progress or queued")
        finally:
            pending[0] -= 1

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
