"""The retrieval server's per-request limits (issue 14): body size, queries per request, query
length, the word cut before scoring, the deadline, and searches that do not wait behind a slow one.

A scripted index records the queries it is asked and can be held on an Event, so nothing here
depends on how fast the machine is; servers bind 127.0.0.1 on a free port.
"""

import threading

import httpx
import pytest

from rlvr.cli import build_parser
from rlvr.retrieval.base import Hit, RetrievalError
from rlvr.retrieval.client import RetrievalClient
from rlvr.retrieval.corpus import Passage
from rlvr.retrieval.server import ServerLimits, cut_query, running_server

DOC = Passage.from_title_text("d1", "Paris", "Paris is the capital of France.")


class ScriptedIndex:
    """Duck-typed index (not an ``Index`` subclass, so it does not register a kind): answers one
    hit per query; a query starting with "hold" waits for ``release`` first."""

    kind = "bm25"  # a kind the server searches concurrently

    def __init__(self):
        self.seen: list[str] = []
        self.release = threading.Event()
        self.holding = threading.Event()

    def __len__(self):
        return 1

    def search(self, queries, k):
        self.seen.extend(queries)
        if any(q.startswith("hold") for q in queries):
            self.holding.set()
            self.release.wait(timeout=30)
        return [[Hit(DOC, 1.0)] for _ in queries]


@pytest.fixture
def scripted():
    index = ScriptedIndex()
    yield index
    index.release.set()  # let a held search thread finish before the server stops


def post(url, body, timeout=10):
    return httpx.post(f"{url}/retrieve", json=body, timeout=timeout)


def test_body_over_the_limit_is_413(scripted):
    with running_server(scripted, max_body_bytes=1000) as url:
        r = post(url, {"queries": ["x" * 2000]})
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]
        # the same without a Content-Length (chunked upload): counted while reading
        r = httpx.post(f"{url}/retrieve", content=iter([b'{"queries": ["', b"x" * 2000, b'"]}']),
                       headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]
        assert post(url, {"queries": ["x" * 900]}).status_code == 200
    assert scripted.seen == ["x" * 900]  # neither large body reached the index


def test_too_many_or_too_long_queries_are_422(scripted):
    with running_server(scripted, max_queries=3, max_query_chars=50) as url:
        r = post(url, {"queries": ["a"] * 4})
        assert r.status_code == 422 and "4 queries in one request" in r.json()["error"] \
            and "--max-queries" in r.json()["error"]
        r = post(url, {"queries": ["short", "y" * 51]})
        assert r.status_code == 422
        assert r.json()["error"] == ("queries[1] is 51 characters long; this server's limit is "
                                     "50 (--max-query-chars)")
        # the client surfaces the server's reason, not the JSON around it
        with RetrievalClient(url, retries=0) as client:
            with pytest.raises(RetrievalError) as exc:
                client.search(["y" * 51], 3)
        assert str(exc.value).endswith("HTTP 422: queries[0] is 51 characters long; this "
                                       "server's limit is 50 (--max-query-chars)")
    assert scripted.seen == []


def test_long_queries_are_cut_to_max_query_words_before_scoring(scripted):
    words = [f"w{i}" for i in range(1000)]
    with running_server(scripted, max_query_words=5) as url:
        r = post(url, {"queries": ["\n ".join(words), "two words"]})
        assert r.status_code == 200
    assert scripted.seen == ["w0 w1 w2 w3 w4", "two words"]


def test_cut_query():
    assert cut_query("a  b\tc d", 3) == "a b c"
    assert cut_query("a  b\tc", 3) == "a  b\tc"  # at the bound: untouched, spacing kept
    assert cut_query("", 3) == ""


def test_a_request_past_its_deadline_is_503_naming_it(scripted):
    with running_server(scripted, deadline_s=0.5) as url:
        r = post(url, {"queries": ["hold me"]})
        assert r.status_code == 503
        assert "deadline of 0.5 s (--deadline-s)" in r.json()["error"]


def test_a_slow_search_does_not_hold_up_the_others(scripted):
    # the old server searched under one lock: the second request waited for the held one
    with running_server(scripted, search_workers=2) as url:
        slow = threading.Thread(target=post, args=(url, {"queries": ["hold on"]}), daemon=True)
        slow.start()
        assert scripted.holding.wait(timeout=10)
        r = post(url, {"queries": ["quick"]}, timeout=5)
        assert r.status_code == 200 and r.json()["result"][0][0]["id"] == "d1"
        scripted.release.set()
        slow.join(timeout=10)


def test_non_concurrent_kinds_search_one_request_at_a_time(scripted):
    scripted.kind = "dense"  # encoders' tokenizers are not thread-safe
    with running_server(scripted, search_workers=4, deadline_s=1.0) as url:
        slow = threading.Thread(target=post, args=(url, {"queries": ["hold on"]}), daemon=True)
        slow.start()
        assert scripted.holding.wait(timeout=10)
        r = post(url, {"queries": ["queued"]})
        assert r.status_code == 503  # waited behind the held search until its deadline
        scripted.release.set()
        slow.join(timeout=10)
    assert "queued" not in scripted.seen  # skipped: nobody was waiting for it any more


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_queries must be a positive number"):
        ServerLimits(max_queries=0)
    with pytest.raises(TypeError, match="unknown server limit"):
        with running_server(ScriptedIndex(), max_querys=3):
            pass


def test_serve_flags_state_the_real_defaults():
    # serve_cmd states the defaults in its help instead of importing the retrieval stack
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub.choices["serve"]._actions}
    for name, value in vars(ServerLimits()).items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"(default {shown})" in helps[name], (name, helps[name])
