"""``rlvr serve``: the retrieval server (Search-R1 wire format) over a built index."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP (Search-R1 /retrieve format)")
    p.add_argument("--index", required=True, help="index directory (rlvr index build --out)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; loopback by default (the server has no auth)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--topk", type=int, default=3, help="passages when a request gives no topk")
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.retrieval.base import load_index
    from rlvr.retrieval.server import serve

    index = load_index(args.index)
    print(f"serving {index.kind} index of {len(index)} passages on "
          f"http://{args.host}:{args.port} (POST /retrieve, GET /health)", flush=True)
    serve(index, host=args.host, port=args.port, log_level=args.log_level,
          default_topk=args.topk)
    return 0
