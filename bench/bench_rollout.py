"""Rollout throughput of the HF engine: single-turn vs multi-turn sampled tokens/s and the tokens
the model was fed (prefill vs decode), optionally against an older checkout of rlvr.

    python bench/bench_rollout.py [--prompts 16] [--samples 8] [--runs 5] [--before DIR] [--device cpu]

One run = one ``rlvr.rollout.episodes.collect`` on a seeded random tiny Llama (``--hidden``, ``--layers``):
``single`` generates ``--max-new-tokens`` per episode in one turn (no stop string); ``multi``
ends each turn at the stop string ``e`` (frequent in random text) and appends an 8-token
observation, for ``--turns`` turns. ``--before DIR`` (a ``git worktree`` of an older commit)
runs the same job with that tree's ``rlvr`` first on ``PYTHONPATH``, alternating before/after
runs in fresh processes so both see the same machine load; the table gives medians. The 1-minute
load average is recorded before and after (the machine may be shared). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def one_run(args) -> dict:
    """One collect of each kind in this process; returns tokens and seconds."""
    import torch

    from rlvr.core.config import RolloutConfig
    from rlvr.core.environment import Environment, StepResult
    from rlvr.engines.hf import HFEngine
    from rlvr.core.models import build_tiny_model, build_tiny_tokenizer
    from rlvr.rollout.episodes import collect
    from rlvr.core.types import Score, Task

    torch.set_num_threads(args.threads)
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=args.hidden, num_layers=args.layers, seed=0).to(args.device)

    class Single(Environment):
        stop_strings = []

        def score(self, completion, task):
            return Score(reward=0.0)

    class Multi(Single):
        stop_strings = ["e"]

        def step(self, action):
            return StepResult(observation=" <obs> ok ok ok </obs>", done=False)

    fed = {"prefill": 0, "decode": 0, "calls": 0}

    def hook(m, a, kw):
        ids = kw["input_ids"] if "input_ids" in kw else a[0]
        fed["calls"] += 1
        fed["prefill" if ids.shape[1] > 1 else "decode"] += int(ids.numel())

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    tasks = [Task(f"Question {i}: what is {i} plus {i * 7 % 13}? Think step by step.", "x", id=f"t{i}")
             for i in range(args.prompts)]
    out = {}
    for name, env, turns in (("single", Single, 1), ("multi", Multi, args.turns)):
        cfg = RolloutConfig(samples_per_prompt=args.samples, max_turns=turns,
                            max_new_tokens=args.max_new_tokens if name == "single" else args.turn_tokens,
                            max_total_tokens=4096, temperature=1.0)
        engine = HFEngine(model, tok, device=args.device)
        for k in fed:
            fed[k] = 0
        t0 = time.perf_counter()
        trajs = collect(engine, tok, env, tasks, samples_per_prompt=args.samples, cfg=cfg, seed=1)
        dt = time.perf_counter() - t0
        sampled = sum(t.num_sampled for t in trajs)
        out[name] = {"seconds": dt, "sampled_tokens": sampled, "tokens_per_s": sampled / dt,
                     "turns": sum(len(t.turns) for t in trajs), "prefill_tokens": fed["prefill"],
                     "decode_tokens": fed["decode"], "forward_calls": fed["calls"]}
    handle.remove()
    return out


def spawn(tree: str | None, args) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("worker", "before", "runs")]
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def median_table(runs: list[dict]) -> dict:
    return {kind: {k: statistics.median(r[kind][k] for r in runs) for k in runs[0][kind]}
            for kind in runs[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64, help="single-turn tokens per episode")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--turn-tokens", type=int, default=32, help="multi-turn budget per turn")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", default=None, help="an older rlvr checkout to compare with")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(one_run(args)))
        return 0
    load0 = os.getloadavg()[0]
    after, before = [], []
    for _ in range(args.runs):  # alternate, so both sides see the same load
        if args.before:
            before.append(spawn(args.before, args))
        after.append(spawn(None, args))
    result = {"settings": {k: v for k, v in vars(args).items() if k != "worker"},
              "loadavg_1min": [load0, os.getloadavg()[0]], "after": median_table(after)}
    if before:
        result["before"] = median_table(before)
        result["speedup_tokens_per_s"] = {
            k: result["after"][k]["tokens_per_s"] / result["before"][k]["tokens_per_s"] for k in result["after"]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
