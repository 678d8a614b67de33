"""Time one GRPO step of the tiny calculator config by phase (rollout, reward, update) and peak memory.

    python bench/bench_grpo_step.py [--config grpo_calculator] [--steps 3] [--device cpu] [--key value ...]

The first step is a warm-up and is reported separately; the table gives the median of the rest.
Peak memory is the process's peak resident set size (CPU) or ``torch.cuda.max_memory_allocated``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="grpo_calculator")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--device", default="cpu")
    args, overrides = ap.parse_known_args(argv)

    import torch

    from rlvr.algorithms.advantages import grpo_advantages
    from rlvr.core.config import load_config
    from rlvr.learners import common

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, overrides + ["--run.output_dir", tmp, "--run.device", args.device,
                                                    "--run.progress", "false",
                                                    "--run.steps", str(args.steps + 1)])
        from rlvr.cli.train_cmd import _resolve_data_paths
        from rlvr.core.config import resolve_config_path

        _resolve_data_paths(cfg, resolve_config_path(args.config))
        s = common.setup(cfg, needs_ref=cfg.rl.kl_coef > 0)
        rows = []
        for step in range(1, args.steps + 2):
            t0 = time.perf_counter()
            trajs, times = common.rollout(s, step)
            t1 = time.perf_counter()
            rewards = torch.tensor([t.reward for t in trajs])
            adv = grpo_advantages(rewards, cfg.rollout.samples_per_prompt, cfg.rl.std_normalize)
            batch = common.prepare_batch(s, trajs, adv)
            t2 = time.perf_counter()
            stats = common.update_policy(s, batch, clipped=True, kl_coef=cfg.rl.kl_coef, step=step)
            if torch.cuda.is_available() and args.device != "cpu":
                torch.cuda.synchronize()
            t3 = time.perf_counter()
            rows.append({"rollout_s": times["time/rollout"], "reward_s": times["time/reward"],
                         "prepare_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0,
                         "sampled_tokens": sum(t.num_sampled for t in trajs),
                         "train_tokens": stats["train/tokens"], "trajectories": len(trajs)})
        s.logger.close()
    timed = rows[1:] or rows
    med = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    if torch.cuda.is_available() and args.device != "cpu":
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_kind = "cuda_max_allocated_mib"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        peak_kind = "peak_rss_mib"
    out = {"config": args.config, "device": args.device, "timed_steps": len(timed),
           "warmup_step_s": rows[0]["step_s"], "median": med,
           "rollout_tokens_per_s": med["sampled_tokens"] / med["rollout_s"],
           "update_tokens_per_s": med["train_tokens"] / med["update_s"],
           peak_kind: round(peak, 1), "torch_threads": torch.get_num_threads()}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
