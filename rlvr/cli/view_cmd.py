"""``rlvr view``: a self-contained HTML inspector of a run's (or an evaluation's) rollouts.

    rlvr view runs/latest                 # writes runs/latest/view.html (with no_mask/ beside it)
    rlvr view runs/a --compare runs/b     # two runs side by side, the same prompt in both
    rlvr view runs/latest --serve         # and serve it on 127.0.0.1 (a free port unless --port)

The page (see :mod:`rlvr.viewer`) needs no network: curves from ``metrics.jsonl``, the step's
groups with rewards and advantages, one trajectory token by token with the mask, the engine's and
the trainer's logprobs and the advantage on hover, filters, and the other run's trajectory of the
same prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="an HTML inspector of a run's rollouts (curves, groups, tokens)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="a run directory (rlvr train) or an evaluation directory (rlvr eval)")
    p.add_argument("--compare", action="append", default=[], metavar="DIR",
                   help="another run shown side by side (default: DIR/no_mask when it exists); "
                        "repeatable")
    p.add_argument("--out", default=None, help="where the page goes (default DIR/view.html)")
    p.add_argument("--max-steps", type=int, default=0,
                   help="embed at most this many logged steps, evenly spaced (0 = all)")
    p.add_argument("--serve", action="store_true", help="serve the page until interrupted")
    p.add_argument("--port", type=int, default=0, help="port for --serve (default: a free one)")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.viewer import write_page

    if args.max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {args.max_steps}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    path = write_page([args.dir, *args.compare], args.out, max_steps=args.max_steps)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.serve:
        server = serve(path, args.port)
        print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0


def serve(page: Path, port: int = 0):
    """An HTTP server on 127.0.0.1 answering ``/`` with the page (read at each request, so a
    rebuilt page shows on reload); the caller runs ``serve_forever``. Loopback only: the page holds
    the run's prompts and completions."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("#")[0].split("?")[0] not in ("/", f"/{page.name}"):
                self.send_error(404, "only the page is served")
                return
            body = page.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *a):
            print(f"rlvr view: {fmt % a}", file=sys.stderr)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)
