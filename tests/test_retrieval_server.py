"""The retrieval server against Search-R1's documented wire format, and the client's failure paths.

Servers bind 127.0.0.1 on a free port and stop at the end of each test.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rlvr.retrieval.base import RetrievalError
from rlvr.retrieval.bm25 import BM25Index
from rlvr.retrieval.client import RetrievalClient
from rlvr.retrieval.corpus import Passage
from rlvr.retrieval.server import running_server

ROWS = [("d1", "Paris", "Paris is the capital of France."),
        ("d2", "Berlin", "Berlin is the capital of Germany."),
        ("d3", "Everest", "Mount Everest is the highest mountain."),
        ("d4", "Nile", "The Nile is a long river in Africa.")]


@pytest.fixture(scope="module")
def index():
    return BM25Index.build([Passage.from_title_text(*r) for r in ROWS])


@pytest.fixture(scope="module")
def url(index):
    with running_server(index) as base:
        yield base


def test_retrieve_with_scores_is_search_r1_shape(url):
    # Search-R1 retrieval_server.py: POST /retrieve {"queries", "topk", "return_scores"} →
    # {"result": [[{"document": {...}, "score": float}, ...] per query]}
    r = httpx.post(f"{url}/retrieve", json={"queries": ["capital of Germany", "highest mountain"],
                                            "topk": 2, "return_scores": True})
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == 2
    first = result[0][0]
    assert set(first) == {"document", "score"} and isinstance(first["score"], float)
    assert first["document"] == {"id": "d2", "contents": '"Berlin"\nBerlin is the capital of Germany.'}
    assert [d["document"]["id"] for d in result[1]] == ["d3"]  # only Everest has those words


def test_retrieve_without_scores_returns_documents(url):
    body = json.dumps({"queries": ["capital"], "topk": 2}).encode()
    r = httpx.post(f"{url}/retrieve", content=body, headers={"Content-Type": "application/json"})
    docs = r.json()["result"][0]
    assert sorted(d["id"] for d in docs) == ["d1", "d2"] and all(set(d) == {"id", "contents"}
                                                                  for d in docs)


def test_topk_defaults_to_three(url):
    r = httpx.post(f"{url}/retrieve", json={"queries": ["the capital Paris Berlin Everest Nile"]})
    assert len(r.json()["result"][0]) == 3


def test_health(url):
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "kind": "bm25", "num_passages": 4}


@pytest.mark.parametrize("body, status, phrase", [
    (b'{"queries": ["a"', 400, "not valid JSON"),
    (b'', 400, "body is empty"),
    (b'{"queries": ["caf\xe9"]}', 400, "not UTF-8: byte 0xe9 at offset 17"),  # Latin-1 é
    (b'[' * 100_000 + b']' * 100_000, 400, "nests arrays or objects too deeply"),
    (b'["capital"]', 422, "must be a JSON object"),
    (b'{"topk": 3}', 422, "queries"),
    (b'{"queries": "capital", "topk": 3}', 422, "queries"),
    (b'{"queries": ["a"], "topk": 0}', 422, "topk"),
    (b'{"queries": ["a"], "topk": "many"}', 422, "topk"),
    (b'{"queries": ["a"], "topk": 1001}', 422, "--max-topk"),
])
def test_bad_requests_get_4xx_with_a_message(url, body, status, phrase):
    r = httpx.post(f"{url}/retrieve", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    assert set(r.json()) == {"error"} and phrase in r.json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1"])
def test_json_under_another_content_type_is_415_naming_it(url, content_type):
    # FastAPI answered text/plain with 422 "Input should be a valid dictionary"
    r = httpx.post(f"{url}/retrieve", content=b'{"queries": ["capital"]}',
                   headers={"Content-Type": content_type})
    assert r.status_code == 415
    assert set(r.json()) == {"error"} and content_type in r.json()["error"]


def test_json_suffix_and_charset_are_accepted(url):
    for ct in ("application/json; charset=utf-8", "application/vnd.search+json"):
        r = httpx.post(f"{url}/retrieve", content=b'{"queries": ["capital"]}',
                       headers={"Content-Type": ct})
        assert r.status_code == 200 and len(r.json()["result"][0]) == 2


@pytest.mark.parametrize("method, path, status", [("GET", "/retrieve", 405),
                                                  ("POST", "/search", 404)])
def test_routing_errors_are_error_bodies(url, method, path, status):
    r = httpx.request(method, f"{url}{path}", json={"queries": ["a"]})
    assert r.status_code == status
    assert set(r.json()) == {"error"} and "POST /retrieve" in r.json()["error"]


def test_client_matches_in_process_index(url, index):
    queries = ["capital of Germany", "highest mountain", "river in Africa", "the"]
    with RetrievalClient(url, batch_size=2, max_concurrency=2) as client:
        assert client.search(queries, 2) == index.search(queries, 2)  # 2 batches, same hits
        assert client.health()["num_passages"] == 4
        assert client.search([], 2) == []
    # a Search-R1 config writes the full /retrieve URL; both forms work
    with RetrievalClient(f"{url}/retrieve") as client:
        assert client.search(["capital of France"], 1) == index.search(["capital of France"], 1)


# -- failure paths, against a scripted stdlib server ------------------------------------------

class _Scripted(BaseHTTPRequestHandler):
    """Answers per a script of (status, delay_s); records each request."""

    script: list = []
    seen: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        type(self).seen.append(json.loads(self.rfile.read(length)))
        status, delay = type(self).script.pop(0) if type(self).script else (200, 0)
        time.sleep(delay)
        if status == 200:
            n = len(type(self).seen[-1]["queries"])
            body = {"result": [[{"document": {"id": "x", "contents": '"T"\nbody'}, "score": 1.5}]] * n}
        else:
            body = {"error": "overloaded"}
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Scripted.script, _Scripted.seen = [], []
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_client_retries_server_errors_then_succeeds(scripted):
    _, url = scripted
    _Scripted.script = [(503, 0), (500, 0)]  # two failures, then 200
    with RetrievalClient(url, retries=2, backoff_s=0.01) as client:
        (hits,) = client.search(["q"], 3)
    assert len(_Scripted.seen) == 3 and _Scripted.seen[0] == {"queries": ["q"], "topk": 3,
                                                               "return_scores": True}
    assert hits[0].passage.title == "T" and hits[0].score == 1.5


def test_client_gives_up_after_retries(scripted):
    _, url = scripted
    _Scripted.script = [(503, 0)] * 3
    with RetrievalClient(url, retries=1, backoff_s=0.01) as client:
        with pytest.raises(RetrievalError, match=r"HTTP 503.*after 2 attempt"):
            client.search(["q"], 3)
    assert len(_Scripted.seen) == 2  # 1 try + 1 retry


def test_client_timeout_is_a_retrieval_error(scripted):
    _, url = scripted
    _Scripted.script = [(200, 1.0), (200, 1.0)]
    with RetrievalClient(url, timeout_s=0.2, retries=1, backoff_s=0.01) as client:
        with pytest.raises(RetrievalError, match="timed out after 0.2s"):
            client.search(["q"], 3)


def test_client_4xx_is_not_retried(scripted):
    _, url = scripted
    _Scripted.script = [(422, 0)]
    with RetrievalClient(url, retries=3, backoff_s=0.01) as client:
        with pytest.raises(RetrievalError, match="HTTP 422"):
            client.search(["q"], 3)
    assert len(_Scripted.seen) == 1


def test_client_connection_refused(scripted):
    server, url = scripted
    server.shutdown()
    server.server_close()
    with RetrievalClient(url, retries=1, backoff_s=0.01, timeout_s=2) as client:
        with pytest.raises(RetrievalError, match="connection failed"):
            client.search(["q"], 3)


def test_listening_socket_disables_nagle():
    # keep-alive requests would otherwise stall ~40 ms each (Nagle vs delayed ACK)
    import socket

    from rlvr.retrieval.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()
