"""REINFORCE with a baseline (Williams 1992), the simplest policy gradient.

Each step: ``rl.prompts_per_step`` × ``rollout.samples_per_prompt`` samples → rewards →
``A_i = r_i - b`` broadcast over each trajectory's trained tokens, with ``b`` the batch mean
(``rl.baseline = batch-mean``) or an exponential moving average of past batches' mean reward
(``moving-average``, decay ``rl.baseline_decay``, checkpointed) → one optimizer step of
``-A log pi`` → log → checkpoint.

Deviations: none from the textbook estimator; ``rl.epochs_per_batch`` and
``rl.mini_batches_per_epoch`` are ignored (one on-policy step per batch). The moving average is
updated after the advantages are computed, so a batch's baseline never contains its own rewards.
"""

from __future__ import annotations

import time

import torch

import rlvr
from rlvr.advantages import moving_average_baseline, reinforce_advantages
from rlvr.learners import common

BASELINES = ("batch-mean", "moving-average")


@rlvr.algorithm("reinforce")
def run(cfg) -> dict:
    """REINFORCE: batch-mean or moving-average baseline, one policy-gradient step per batch."""
    return train(cfg)


def train(cfg, model=None, tokenizer=None, tasks=None, eval_fn=None, logger=None) -> dict:
    if cfg.rl.baseline not in BASELINES:
        raise ValueError(f"rl.baseline {cfg.rl.baseline!r} is not one of {BASELINES}")
    s = common.setup(cfg, model, tokenizer, tasks, logger, needs_ref=cfg.rl.kl_coef > 0)
    history = []
    for step in range(s.start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        # collect + score
        trajs, times = common.rollout(s, step)
        # advantages
        t0 = time.perf_counter()
        rewards = torch.tensor([t.reward for t in trajs])  # (N,)
        baseline = None
        if cfg.rl.baseline == "moving-average":
            baseline = s.extra.get("baseline")  # None on the first batch: starts at its mean
            baseline = float(rewards.mean()) if baseline is None else baseline
        adv = reinforce_advantages(rewards, baseline)  # (N,)
        if cfg.rl.baseline == "moving-average":
            s.extra["baseline"] = moving_average_baseline(s.extra.get("baseline"), float(rewards.mean()),
                                                          cfg.rl.baseline_decay)
        times["time/advantages"] = time.perf_counter() - t0
        # update: one optimizer step on the whole batch
        t0 = time.perf_counter()
        batch = common.prepare_batch(s, trajs, adv)
        beta = common.kl_coef(s)
        stats = common.update_policy(s, batch, clipped=False, kl_coef=beta, epochs=1,
                                     mini_batches_per_epoch=1, step=step)
        times["time/update"] = time.perf_counter() - t0
        times["time/train_tokens_per_s"] = stats["train/tokens"] / max(times["time/update"], 1e-9)
        # log + checkpoint
        metrics = common.step_metrics(trajs, cfg, times, t_step)
        metrics.update(stats)
        metrics["train/baseline"] = float(rewards.mean()) if baseline is None else baseline
        common.log_and_checkpoint(s, step, metrics, eval_fn)
        history.append(metrics)
    return common.finish(s, history)
