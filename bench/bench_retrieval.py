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

Dense needs faiss-cpu and tokenlearn-static-model (``pip install 'rlvr[dense]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


def server_throughput(index_dir: Path, queries: list[str], threads: int, n_single: int,
                      batch: int) -> dict:
    import httpx

    from rlvr.retrieval.client import RetrievalClient

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlvr", "serve", "--index", str(index_dir),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries timed one per call")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=8, help="concurrent HTTP clients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--workdir", default=None, help="keep corpus and indexes here")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    # internal: a build in a child process
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vectors", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

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
