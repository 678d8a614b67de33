"""``rlvr sandbox check`` and ``rlvr sandbox run FILE``: the code sandbox from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("sandbox", help="check the code sandbox or run one program in it")
    p.add_argument("--backend", default=None, help="local | docker (default: $RLVR_SANDBOX or local)")
    p.add_argument("--isolation", default="auto", help="local backend: auto | bwrap | none")
    p.add_argument("--image", default=None, help="docker backend: the image to run")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("check", help="print the backend and which isolation layers are active")
    r = actions.add_parser("run", help="run one Python program; print the result as one JSON object")
    r.add_argument("file", help="the Python program")
    r.add_argument("--stdin", default=None, help="file whose contents become the program's stdin")
    r.add_argument("--timeout", type=float, default=10.0, help="wall-clock limit in seconds")
    r.add_argument("--memory-mb", type=int, default=512, help="memory limit in MiB")
    p.set_defaults(func=run)


def _backend(args):
    import os

    from rlvr.verifiers.sandbox import make_backend

    name = args.backend or os.environ.get("RLVR_SANDBOX", "local")
    options = {}
    if name == "local":
        options["isolation"] = args.isolation
    elif name == "docker" and args.image:
        options["image"] = args.image
    return make_backend(name, **options)


def run(args) -> int:
    from rlvr.verifiers.sandbox import Limits, SandboxUnavailable

    if args.action not in ("check", "run"):
        print("rlvr sandbox: give an action: check | run FILE", file=sys.stderr)
        return 2
    try:
        backend = _backend(args)
    except SandboxUnavailable as e:
        print(json.dumps({"backend": args.backend, "works": False, "error": str(e)}))
        return 1
    try:
        if args.action == "check":
            report = backend.check()
            print(json.dumps(report, indent=2))
            return 0 if report.get("works") else 1
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"no program file {path}")
        program = path.read_text(encoding="utf-8", errors="replace")
        stdin = ""
        if args.stdin:
            stdin_path = Path(args.stdin)
            if not stdin_path.is_file():
                raise FileNotFoundError(f"no stdin file {stdin_path}")
            stdin = stdin_path.read_text(encoding="utf-8", errors="replace")
        if args.timeout <= 0:
            raise ValueError(f"--timeout must be positive, got {args.timeout}")
        result = backend.run(program, stdin, args.timeout, Limits(memory_mb=args.memory_mb))
        print(json.dumps(result.to_dict()))
        return 0 if result.status != "sandbox_error" else 1
    finally:
        backend.close()
