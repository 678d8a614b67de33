"""`rlvr index build|search` and `rlvr serve`, end to end on a tiny corpus."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rlvr.cli import main

CORPUS = [
    {"id": "1", "contents": '"Paris"\nParis is the capital and largest city of France.'},
    {"id": "2", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "3", "contents": '"Mount Everest"\nMount Everest is the highest mountain on Earth.'},
]


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "corpus.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    return f


def test_build_and_search_bm25(tmp_path, corpus, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--corpus", str(corpus), "--kind", "bm25", "--out", str(out)]) == 0
    assert "built bm25 index of 3 passages" in capsys.readouterr().out
    assert main(["index", "search", str(out), "capital of Germany", "-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert 'Doc 1(Title: "Berlin") Berlin is the capital of Germany.' in printed
    assert main(["index", "search", str(out), "highest mountain", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert [d["document"]["id"] for d in result[0]] == ["3"]
    # a second build into the same directory needs --force
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_build_dense_tiny(tmp_path, corpus, capsys):
    pytest.importorskip("faiss")
    out = tmp_path / "dense"
    assert main(["index", "build", "--corpus", str(corpus), "--kind", "dense", "--encoder", "tiny",
                 "--faiss", "hnsw", "--out", str(out)]) == 0
    meta = json.loads((out / "index.json").read_text())
    assert meta["kind"] == "dense" and meta["settings"]["faiss"] == "hnsw"
    assert meta["settings"]["query_prefix"] == "query: "
    assert main(["index", "search", str(out), "Berlin is the capital of Germany", "-k", "1"]) == 0
    assert "id=2" in capsys.readouterr().out


def test_bad_row_stops_build_with_file_and_line(tmp_path, corpus, capsys):
    with corpus.open("a") as fh:
        fh.write('{"id": "4", "contents": 7}\n')
    out = tmp_path / "idx"
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(out)]) == 2
    assert f"{corpus}:4: field 'contents' must be a string" in capsys.readouterr().err
    assert not out.exists()  # no half-written index left behind
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(out),
                 "--skip-bad-rows"]) == 0
    assert "of 3 passages" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command(tmp_path, corpus):
    out = tmp_path / "idx"
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(out)]) == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlvr", "serve", "--index", str(out), "--port",
                             str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        r = httpx.post(f"{base}/retrieve", json={"queries": ["capital of France"], "topk": 1,
                                                 "return_scores": True})
        assert r.json()["result"][0][0]["document"]["id"] == "1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
