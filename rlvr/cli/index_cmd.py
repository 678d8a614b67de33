"""``rlvr index build|search``: build a BM25 / dense / hybrid index from a corpus, query one."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="build or query a retrieval index")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")

    b = isub.add_parser("build", help="index a JSONL corpus ({id, contents} or {id, title, text})")
    b.add_argument("--corpus", required=True, help="JSONL (or .jsonl.gz) corpus file")
    b.add_argument("--kind", choices=("bm25", "dense", "hybrid"), default="bm25",
                   help="hybrid = bm25 + dense fused by reciprocal rank")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--encoder", default="static",
                   help="dense encoder: a hub id or local model dir (e.g. intfloat/e5-base-v2), "
                        "'minilm', 'static' (default) or 'tiny'")
    b.add_argument("--faiss", choices=("flat", "hnsw", "ivf"), default="flat",
                   help="dense index structure")
    b.add_argument("--query-prefix", default=None, help="dense: text put before each query "
                   "(default 'query: ' for transformers encoders, '' for static/minilm)")
    b.add_argument("--passage-prefix", default=None, help="dense: text put before each passage")
    b.add_argument("--pooling", choices=("mean", "cls"), default=None, help="dense: pooling")
    b.add_argument("--no-normalize", action="store_true", help="dense: keep raw vector norms")
    b.add_argument("--max-length", type=int, default=None, help="dense: max tokens per text")
    b.add_argument("--batch-size", type=int, default=None, help="dense: texts per encoder call")
    b.add_argument("--device", default=None, help="dense: torch device for the encoder")
    b.add_argument("--skip-bad-rows", action="store_true",
                   help="log and skip malformed corpus rows instead of stopping at the first")
    b.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    b.set_defaults(func=run_build)

    s = isub.add_parser("search", help="query a built index")
    s.add_argument("index_dir", help="index directory")
    s.add_argument("query", nargs="+", help="query text (several = one batch)")
    s.add_argument("-k", type=int, default=3, help="passages per query")
    s.add_argument("--json", action="store_true", help="Search-R1 wire format instead of text")
    s.set_defaults(func=run_search)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _encoder_kw(args) -> dict:
    kw = {"query_prefix": args.query_prefix, "passage_prefix": args.passage_prefix,
          "pooling": args.pooling, "max_length": args.max_length, "batch_size": args.batch_size,
          "device": args.device}
    kw = {k: v for k, v in kw.items() if v is not None}
    if args.no_normalize:
        kw["normalize"] = False
    return kw


def run_build(args) -> int:
    from rlvr.retrieval.corpus import read_corpus

    out = args.out
    if os.path.isdir(out) and os.listdir(out) and not args.force:
        raise ValueError(f"--out {out} is not empty (use --force to overwrite)")
    if not os.path.isfile(args.corpus):
        raise FileNotFoundError(f"corpus file not found: {args.corpus}")
    on_error = "skip" if args.skip_bad_rows else "raise"
    size = os.path.getsize(args.corpus)
    t0 = time.perf_counter()

    def passages(bar):
        return read_corpus(args.corpus, on_error=on_error, progress=bar.update)

    def build(kind, workdir, bar):
        if kind == "bm25":
            from rlvr.retrieval.bm25 import BM25Index
            return BM25Index.build(passages(bar), workdir=workdir)
        from rlvr.retrieval.dense import DenseIndex
        return DenseIndex.build(passages(bar), encoder=args.encoder, faiss=args.faiss,
                                workdir=workdir, encoder_kw=_encoder_kw(args))

    created = not os.path.exists(out)
    try:
        index = _build_all(args, build, size)
        index.save(out)
    except BaseException as e:
        if created:  # a failed build leaves no half-written index behind
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, ImportError):  # a missing optional package: say which, no traceback
            raise ValueError(str(e)) from e
        raise
    print(f"built {index.kind} index of {len(index)} passages in "
          f"{time.perf_counter() - t0:.1f}s → {out}")
    return 0


def _build_all(args, build, size):
    from tqdm import tqdm

    out = args.out
    if args.kind == "hybrid":
        from rlvr.retrieval.hybrid import HybridIndex
        parts = []
        for i, kind in enumerate(("bm25", "dense")):
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"indexing ({kind})",
                      file=sys.stderr) as bar:
                parts.append(build(kind, os.path.join(out, f"part{i}"), bar))
        index = HybridIndex(parts)
    else:
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"indexing ({args.kind})",
                  file=sys.stderr) as bar:
            index = build(args.kind, out, bar)
    return index


def run_search(args) -> int:
    from rlvr.retrieval.base import format_passages, load_index

    index = load_index(args.index_dir)
    results = index.search(list(args.query), args.k)
    if args.json:
        print(json.dumps({"result": [[{"document": h.passage.to_json(), "score": h.score}
                                      for h in hits] for hits in results]}, ensure_ascii=False))
        return 0
    for query, hits in zip(args.query, results):
        print(f"# {query}")
        for i, h in enumerate(hits, start=1):
            print(f"[{i}] score={h.score:.4f} id={h.passage.id}")
        print(format_passages(hits) if hits else "(no passages)")
    return 0
