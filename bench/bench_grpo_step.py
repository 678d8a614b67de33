"""Time the steps of an on-policy config by phase (rollout, reward, update) with peak memory per phase.

    python bench/bench_grpo_step.py [--config grpo_calculator] [--steps 3] [--device cpu] [--key value ...]

Runs the real learner (``learner_for(cfg.algorithm)``) for one warm-up step and ``--steps`` timed
ones; times come from its ``metrics.jsonl``, the table gives the median of the timed steps.
Peak memory per phase: on CPU the highest resident set size seen while the phase ran (sampled
every 2 ms from ``/proc/self/statm``, so a peak shorter than that can be missed); on CUDA
``torch.cuda.max_memory_allocated`` since the phase began. Phases: ``rollout`` (generation and
scoring), ``prepare`` (collation, missing behaviour and reference logprobs), ``update``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")  # /proc/self/statm counts pages (Linux)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class PhasePeaks:
    """The peak memory (MiB) of each named phase; ``wrap(module, name, phase)`` times a function."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.phase, self.peaks = cuda, None, {}
        self._stop = threading.Event()
        if not cuda:
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            phase = self.phase  # read once: the main thread may end the phase meanwhile
            if phase is not None:
                self.peaks[phase] = max(self.peaks.get(phase, 0.0), rss_mib())

    def wrap(self, module, name: str, phase: str) -> None:
        import torch

        inner = getattr(module, name)

        def timed(*a, **kw):
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            self.phase = phase
            try:
                return inner(*a, **kw)
            finally:
                self.phase = None
                if self.cuda:
                    got = torch.cuda.max_memory_allocated() / 2**20
                    self.peaks[phase] = max(self.peaks.get(phase, 0.0), got)
        setattr(module, name, timed)

    def close(self) -> None:
        self._stop.set()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="grpo_calculator")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--device", default="cpu")
    args, overrides = ap.parse_known_args(argv)

    import torch

    from rlvr.cli.train_cmd import _resolve_data_paths
    from rlvr.core.config import load_config, resolve_config_path
    from rlvr.learners import common
    from rlvr.learners.dispatch import learner_for

    cuda = args.device != "cpu" and torch.cuda.is_available()
    peaks = PhasePeaks(cuda)
    peaks.wrap(common, "rollout", "rollout")
    peaks.wrap(common, "prepare_batch", "prepare")
    peaks.wrap(common, "update_policy", "update")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, overrides + [
            "--run.output_dir", tmp, "--run.device", args.device, "--run.progress", "false",
            "--run.steps", str(args.steps + 1), "--run.eval_every", "0",
            "--run.log_rollouts_every", "0"])
        _resolve_data_paths(cfg, resolve_config_path(args.config))
        learner_for(cfg.algorithm)(cfg)
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    peaks.close()
    rows = [r for r in rows if "time/step" in r]
    keys = {"step_s": "time/step", "rollout_s": "time/rollout", "reward_s": "time/reward",
            "prepare_s": "time/advantages", "update_s": "time/update",
            "sampled_tokens": "rollout/response_len", "train_tokens": "train/tokens"}
    timed = rows[1:] or rows
    med = {k: statistics.median(r.get(m, 0.0) for r in timed) for k, m in keys.items()}
    trajectories = cfg.rl.prompts_per_step * cfg.rollout.samples_per_prompt
    med["sampled_tokens"] *= trajectories  # the metric is a per-trajectory mean
    out = {"config": args.config, "algorithm": cfg.algorithm, "device": args.device,
           "timed_steps": len(timed), "trajectories": trajectories,
           "warmup_step_s": rows[0]["time/step"], "median": med,
           "rollout_tokens_per_s": med["sampled_tokens"] / max(med["rollout_s"], 1e-9),
           "update_tokens_per_s": med["train_tokens"] / max(med["update_s"], 1e-9),
           ("cuda_max_allocated_mib" if cuda else "peak_rss_mib_by_phase"):
               {k: round(v, 1) for k, v in peaks.peaks.items()},
           "torch_threads": torch.get_num_threads()}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
