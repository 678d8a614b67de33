"""Verifier throughput: checks per second for math (typical boxed answers) and QA, in one process
vs through the verifier pool.

    python bench/bench_verifiers.py [--n 400] [--workers 2]

"single" calls the check inline in this process's main thread (for math, ``check_math``: no
isolation, no deadline); "pool" is ``verify_batch`` over worker processes with deadlines, timed
after the pool has started, so it measures steady-state throughput including the IPC.
"""

from __future__ import annotations

import argparse
import random
import time


def math_items(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    forms = [
        lambda a, b: (f"so the total is \\boxed{{{a + b}}}.", str(a + b)),                  # textual
        lambda a, b: (f"\\boxed{{\\frac{{{a}}}{{{b}}}}}", f"{a}/{b}"),                     # sympy
        lambda a, b: (f"<answer>{a * b}</answer>", str(a * b)),
        lambda a, b: (f"#### {a * 1000 + b:,}", str(a * 1000 + b)),
        lambda a, b: (f"\\boxed{{{a}\\sqrt{{2}}}}", f"\\sqrt{{{2 * a * a}}}"),             # sympy
        lambda a, b: (f"\\boxed{{{a + b + 1}}}", str(a + b)),                              # wrong
    ]
    return [forms[i % len(forms)](rng.randint(1, 99), rng.randint(1, 99)) for i in range(n)]


def qa_items(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    words = ["paris", "the eiffel tower", "new york city", "1990", "marie curie", "blue whale"]
    out = []
    for _ in range(n):
        gold = rng.choice(words)
        said = gold if rng.random() < 0.5 else rng.choice(words)
        out.append((f"<think>let me search</think><search>q</search><information>doc</information>"
                    f"<think>ok</think><answer>{said.title()}.</answer>", [gold, gold.upper()]))
    return out


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="checks per measurement")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from rlvr.core.scoring import VerifierPool, verify, verify_batch
    from rlvr.verifiers.math import check_math

    m, q = math_items(args.n), qa_items(args.n)
    check_math(*m[1])  # warm the imports outside the timing
    rows = []
    with VerifierPool(args.workers) as pool:
        verify_batch("qa_em", q[:4], pool=pool)  # start the workers outside the timing
        rows.append(("math", "single", rate(lambda: [check_math(c, a) for c, a in m], args.n)))
        rows.append(("math", f"pool x{args.workers}",
                     rate(lambda: verify_batch("math", m, pool=pool), args.n)))
        rows.append(("qa_em", "single", rate(lambda: [verify("qa_em", c, a) for c, a in q], args.n)))
        rows.append(("qa_em", f"pool x{args.workers}",
                     rate(lambda: verify_batch("qa_em", q, pool=pool), args.n)))
        rows.append(("qa_f1", "single", rate(lambda: [verify("qa_f1", c, a) for c, a in q], args.n)))
    print(f"{'verifier':<8} {'mode':<8} {'checks/s':>10}   (n={args.n})")
    for name, mode, r in rows:
        print(f"{name:<8} {mode:<8} {r:>10.0f}")


if __name__ == "__main__":
    main()
