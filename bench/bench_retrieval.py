"""Retrieval benchmark over a synthetic, seeded corpus (100k passages by default).

Measures, for BM25 and dense Flat / HNSW (static 64-d encoder):
  * build time and peak memory (each build in its own process, so peaks do not mix);
  * load time (memory-mapped where the library allows);
  * queries per second in process, one query per call and in batches;
  * recall@10 of the passage each query was drawn from (a sanity check, not a quality claim:
    the corpus is random words);
  * the HTTP server's throughput (``rlvr serve`` in its own process, loopback) from a concurrent
    client — single-query requests from several threads, and ``RetrievalClient`` batches —
    against the in-process numbers.

    python bench/bench_retrieval.py                      # ~3-5 minutes on 2 CPU cores
    python bench/bench_retrieval.py --passages 20000 --out results.json
    python bench/bench_retrieval.py --mixed              # only the mixed load below

``--mixed``: 1,000 single-query requests from 32 client threads against a BM25 server, once all
good and once with 31 of them replaced by 1 MiB queries; reports the good queries' p50/p99
latency in both runs (a pathological request must not stall the rest) and the load average.

Dense needs faiss-cpu and tokenlearn-static-model (``pip install 'rlvr[dense]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WORDS_PER_PASSAGE = 50
QUERY_WORDS = 4


# -- synthetic corpus ---------------------------------------------------------------------------

def _vocabulary(rng: random.Random, size: int) -> list[str]:
    """Whole words of the static encoder's tokenizer when it is installed (so a word is one
    token, as with real text), else pronounceable syllable strings."""
    words: list[str] = []
    try:
        import importlib.util

        spec = importlib.util.find_spec("static_model")
        if spec is not None:
            tok = json.loads((Path(spec.origin).parent / "model" / "tokenizer.json").read_text())
            words = sorted({w[1:].lower() for w, _ in tok["model"]["vocab"]
                            if w.startswith("▁") and w[1:].isalpha() and len(w) >= 5})
    except (OSError, ValueError, KeyError):
        words = []
    if len(words) < size:
        cons, vow = "bcdfghklmnprstvz", "aeiou"
        seen = set(words)
        while len(seen) < size:
            seen.add("".join(rng.choice(cons) + rng.choice(vow) for _ in range(rng.randint(2, 4))))
        words = sorted(seen)
    rng.shuffle(words)
    return words[:size]


def make_corpus(path: Path, n: int, n_queries: int, seed: int) -> list[tuple[str, str]]:
    """Write ``n`` passages as Search-R1 JSONL; return (query, id of its source passage)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng, 20_000)
    # Zipf-like word frequencies, as in natural text: weight 1/rank
    cum, total = [], 0.0
    for r in range(len(vocab)):
        total += 1.0 / (r + 1)
        cum.append(total)
    queries = []
    query_rows = set(rng.sample(range(n), n_queries))
    with path.open("w") as fh:
        for i in range(n):
            title = " ".join(rng.choices(vocab, cum_weights=cum, k=2)).title()
            ranks = rng.choices(range(len(vocab)), cum_weights=cum, k=WORDS_PER_PASSAGE)
            words = [vocab[r] for r in ranks]
            fh.write(json.dumps({"id": str(i), "contents": f'"{title}"\n' + " ".join(words)}) + "\n")
            if i in query_rows:
                # a query names the passage's rarest words, as a person's keywords would
                rare = sorted(set(ranks), reverse=True)[:QUERY_WORDS]
                rng.shuffle(rare)
                queries.append((" ".join(vocab[r] for r in rare), str(i)))
    return queries


# -- worker processes (one build each, so peak memory is per build) ---------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args) -> None:
    from rlvr.retrieval.corpus import read_corpus

    if args.worker == "serve":  # --corpus: the index directory, --out: the server.py to use
        import importlib.util

        from rlvr.retrieval.base import load_index

        spec = importlib.util.spec_from_file_location("server_under_test", args.out)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
        spec.loader.exec_module(module)
        module.serve(load_index(args.corpus), port=args.port, log_level="warning")
        return
    base_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    extra = {}
    if args.worker == "bm25":
        from rlvr.retrieval.bm25 import BM25Index

        index = BM25Index.build(read_corpus(args.corpus), workdir=args.out)
    elif args.worker == "encode":
        import numpy as np

        from rlvr.retrieval.dense import _passage_text
        from rlvr.retrieval.encoders import make_encoder

        enc = make_encoder("static")
        base_rss = _peak_rss_mb()
        texts = [_passage_text(p) for p in read_corpus(args.corpus)]
        vecs = enc.encode(texts, "passage")
        np.save(args.out, vecs)
        print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
                          "rss_growth_mb": _peak_rss_mb() - base_rss,
                          "passages_per_s": len(texts) / (time.perf_counter() - t0)}))
        return
    else:
        import numpy as np

        from rlvr.retrieval.dense import DenseIndex

        vecs = np.load(args.vectors)
        base_rss = _peak_rss_mb()
        t0 = time.perf_counter()
        index = DenseIndex.from_vectors(read_corpus(args.corpus), vecs, encoder="static",
                                        faiss=args.worker, workdir=args.out)
        extra = {"note": "faiss + passage store only; encoding timed separately"}
    index.save(args.out)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
                      "rss_growth_mb": _peak_rss_mb() - base_rss, **extra}))


def run_worker(kind: str, corpus: Path, out: Path, vectors: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--corpus", str(corpus), "--out", str(out)]
    if vectors is not None:
        cmd += ["--vectors", str(vectors)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- measurements ------------------------------------------------------------------------------

def qps_in_process(index, queries: list[str], n_single: int, batch: int) -> dict:
    t0 = time.perf_counter()
    for q in queries[:n_single]:
        index.search([q], 10)
    single = n_single / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(queries), batch):
        index.search(queries[i:i + batch], 10)
    batched = len(queries) / (time.perf_counter() - t0)
    return {"single_qps": single, f"batched{batch}_qps": batched}


def recall_at_10(index, queries: list[tuple[str, str]]) -> float:
    results = index.search([q for q, _ in queries], 10)
    return sum(pid in {h.passage.id for h in hits} for (_, pid), hits in zip(queries, results)) \
        / len(queries)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(index_dir: Path, serve_args: list[str] = (),
           server_file: str | None = None) -> Iterator[str]:
    """``rlvr serve`` over ``index_dir`` in its own process; yields the base URL once healthy.

    server_file: serve with this copy of retrieval/server.py instead (e.g. an older version from
    ``git show``), to compare two versions on one machine and corpus.
    """
    import httpx

    port = _free_port()
    if server_file:
        cmd = [sys.executable, __file__, "--worker", "serve", "--corpus", str(index_dir),
               "--out", server_file, "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "rlvr", "serve", "--index", str(index_dir), "--port",
               str(port), "--log-level", "warning", *serve_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_throughput(index_dir: Path, queries: list[str], threads: int, n_single: int,
                      batch: int) -> dict:
    import httpx

    from rlvr.retrieval.client import RetrievalClient

    with served(index_dir) as url:
        # one query per request, `threads` requests in flight (many environments, no batching)
        todo = list(queries[:n_single])
        lock = threading.Lock()
        errors = []

        def loop():
            with httpx.Client(timeout=30) as http:
                while True:
                    with lock:
                        if not todo:
                            return
                        q = todo.pop()
                    r = http.post(f"{url}/retrieve", json={"queries": [q], "topk": 10,
                                                           "return_scores": True})
                    if r.status_code != 200:
                        errors.append(r.status_code)

        t0 = time.perf_counter()
        pool = [threading.Thread(target=loop) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        single = n_single / (time.perf_counter() - t0)
        # the environment path: one batched call per turn, split by the client
        with RetrievalClient(url, batch_size=batch, max_concurrency=threads) as client:
            t0 = time.perf_counter()
            client.search(queries, 10)
            batched = len(queries) / (time.perf_counter() - t0)
        return {f"http_single_{threads}threads_qps": single, f"http_batched{batch}_qps": batched,
                "http_errors": len(errors)}


# -- mixed load: good queries with a few pathological ones (issue 14) ------------------------

def _pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def big_query(corpus: Path, n_chars: int) -> str:
    """A query of ``n_chars`` characters of corpus words: every word is in the index, so a
    server that scores it whole sums one posting list per word."""
    words: list[str] = []
    size = 0
    with corpus.open() as fh:
        for line in fh:
            for w in json.loads(line)["contents"].split("\n", 1)[1].split():
                words.append(w)
                size += len(w) + 1
            if size >= n_chars:
                break
    return " ".join(words)[:n_chars]


def run_load(url: str, requests: list[tuple[str, str]], threads: int) -> list[tuple]:
    """Send ``requests`` ((kind, query), one query each) from ``threads`` threads in order;
    return (kind, status, seconds) per request."""
    import httpx

    todo = list(reversed(requests))
    lock = threading.Lock()
    out: list[tuple] = []

    def loop():
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    kind, q = todo.pop()
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{url}/retrieve", json={"queries": [q], "topk": 10,
                                                           "return_scores": True})
                    status = r.status_code
                except httpx.HTTPError as e:
                    status = type(e).__name__
                out.append((kind, status, time.perf_counter() - t0))

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


def _summary(rows: list[tuple], wall: float, load_before: float) -> dict:
    from collections import Counter

    good = [s for kind, status, s in rows if kind == "good" and status == 200]
    bad = [(status, s) for kind, status, s in rows if kind == "bad"]
    res = {"good_ok": len(good),
           "good_failed": sum(1 for kind, status, _ in rows if kind == "good" and status != 200),
           "good_p50_ms": 1000 * _pct(good, 50), "good_p99_ms": 1000 * _pct(good, 99),
           "wall_s": wall, "loadavg_1min_before": load_before,
           "loadavg_1min_after": os.getloadavg()[0]}
    if bad:
        res["bad_status"] = dict(Counter(str(st) for st, _ in bad))
        res["bad_p50_ms"] = 1000 * _pct([s for _, s in bad], 50)
    return res


def mixed(index_dir: Path, corpus: Path, queries: list[str], args) -> dict:
    """Good single-query requests from ``args.mixed_threads`` threads, without and with
    ``args.bad`` requests of one ``args.bad_chars``-character query at seeded positions; the
    latency of the good ones is what a pathological request must not spoil."""
    rng = random.Random(args.seed)
    n = args.mixed_requests
    good = [("good", queries[i % len(queries)]) for i in range(n)]
    bad_q = big_query(corpus, args.bad_chars)
    mix = good[: n - args.bad]
    for pos in sorted(rng.sample(range(n), args.bad)):
        mix.insert(pos, ("bad", bad_q))
    out = {"requests": n, "threads": args.mixed_threads, "bad": args.bad,
           "bad_chars": len(bad_q), "serve_args": args.serve_arg,
           "server_file": args.server_file}
    with served(index_dir, args.serve_arg, args.server_file) as url:
        run_load(url, good[: 2 * args.mixed_threads], args.mixed_threads)  # warm up
        for name, reqs in (("without_bad", good), ("with_bad", mix)):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            rows = run_load(url, reqs, args.mixed_threads)
            out[name] = _summary(rows, time.perf_counter() - t0, load)
            print(f"mixed {name}: {json.dumps(out[name])}", file=sys.stderr)
    out["p99_ratio"] = out["with_bad"]["good_p99_ms"] / out["without_bad"]["good_p99_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=None,
                    help="corpus size (100,000; 10,000 with --mixed, where the old server took "
                         "~5 s per huge query)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries timed one per call")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=8, help="concurrent HTTP clients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--workdir", default=None, help="keep corpus and indexes here")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--mixed", action="store_true",
                    help="only the mixed-load test: BM25 server, good queries with and without "
                         "a few huge ones")
    ap.add_argument("--mixed-requests", type=int, default=1000)
    ap.add_argument("--mixed-threads", type=int, default=32)
    ap.add_argument("--bad", type=int, default=31, help="huge-query requests in the mix")
    ap.add_argument("--bad-chars", type=int, default=2**20, help="length of each huge query")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra `rlvr serve` flag for the mixed test (repeatable), "
                         "e.g. --serve-arg=--max-query-chars=2000000")
    ap.add_argument("--server-file", default=None,
                    help="mixed test against this copy of retrieval/server.py (e.g. "
                         "`git show REV:retrieval/server.py > old.py`) instead of `rlvr serve`")
    # internal: a build (or a server) in a child process
    ap.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vectors", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.passages is None:
        args.passages = 10_000 if args.mixed else 100_000

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rlvr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    corpus = work / "corpus.jsonl"
    t0 = time.perf_counter()
    qs = make_corpus(corpus, args.passages, args.queries, args.seed)
    queries = [q for q, _ in qs]
    results: dict = {"passages": args.passages, "queries": len(qs), "cpus": os.cpu_count(),
                     "corpus_mb": corpus.stat().st_size / 2**20,
                     "corpus_seconds": time.perf_counter() - t0}
    print(f"corpus: {args.passages} passages, {results['corpus_mb']:.1f} MB", file=sys.stderr)

    if args.mixed:
        bm25_dir = work / "bm25"
        results["bm25_build"] = run_worker("bm25", corpus, bm25_dir)
        results["mixed"] = mixed(bm25_dir, corpus, queries, args)
        results["total_seconds"] = time.perf_counter() - t_all
        print(json.dumps(results, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return

    from rlvr.retrieval.base import load_index

    kinds = ["bm25"] + ([] if args.no_dense else ["flat", "hnsw"])
    if not args.no_dense:
        results["encode_static"] = run_worker("encode", corpus, work / "vectors.npy")
        print(f"encode: {results['encode_static']}", file=sys.stderr)
    for kind in kinds:
        out = work / kind
        row = {"build": run_worker(kind, corpus, out,
                                   work / "vectors.npy" if kind != "bm25" else None)}
        t0 = time.perf_counter()
        index = load_index(out)
        row["load_seconds"] = time.perf_counter() - t0
        row["in_process"] = qps_in_process(index, queries, args.single, args.batch)
        row["recall_at_10"] = recall_at_10(index, qs)
        index.close()
        if kind in ("bm25", "hnsw"):
            row["server"] = server_throughput(out, queries, args.threads, args.single, args.batch)
        results[kind if kind == "bm25" else f"dense_{kind}"] = row
        print(f"{kind}: {json.dumps(row)}", file=sys.stderr)
    results["total_seconds"] = time.perf_counter() - t_all
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
