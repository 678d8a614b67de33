"""``rlvr serve``: the retrieval server (Search-R1 wire format) over a built index."""

from __future__ import annotations

LIMIT_FLAGS = ("max_body_bytes", "max_queries", "max_query_chars", "max_query_words", "max_topk",
               "deadline_s", "search_workers")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP (Search-R1 /retrieve format)")
    p.add_argument("--index", required=True, help="index directory (rlvr index build --out)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; loopback by default (the server has no auth)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--topk", type=int, default=3, help="passages when a request gives no topk")
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    # per-request limits (rlvr.retrieval.server.ServerLimits; defaults are stated here rather
    # than imported, so `rlvr --help` does not load the retrieval stack; a test keeps them equal)
    g = p.add_argument_group("per-request limits")
    g.add_argument("--max-body-bytes", type=int, help="413 above this body size (default 4194304)")
    g.add_argument("--max-queries", type=int, help="422 above this many queries (default 4096)")
    g.add_argument("--max-query-chars", type=int,
                   help="422 for a query longer than this (default 32768)")
    g.add_argument("--max-query-words", type=int,
                   help="longer queries are cut to this many words before scoring (default 256)")
    g.add_argument("--max-topk", type=int, help="422 above this topk (default 1000)")
    g.add_argument("--deadline-s", type=float,
                   help="503 when a request is not answered in this many seconds (default 20)")
    g.add_argument("--search-workers", type=int,
                   help="BM25 searches run at once; dense/hybrid run one (default 4)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.retrieval.base import load_index
    from rlvr.retrieval.server import ServerLimits, serve

    # checked before the index loads (which can take minutes); a ValueError names the limit
    limits = ServerLimits(**{name: getattr(args, name) for name in LIMIT_FLAGS
                             if getattr(args, name) is not None})
    index = load_index(args.index)
    print(f"serving {index.kind} index of {len(index)} passages on "
          f"http://{args.host}:{args.port} (POST /retrieve, GET /health)", flush=True)
    serve(index, host=args.host, port=args.port, log_level=args.log_level,
          default_topk=args.topk, limits=limits)
    return 0
