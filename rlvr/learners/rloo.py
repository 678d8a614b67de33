"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024,
https://arxiv.org/abs/2402.14740; Kool et al. 2019).

Each step: K = ``rollout.samples_per_prompt`` samples per prompt → rewards → ``A_i = r_i -
mean(r_j, j != i)`` broadcast over each trajectory's trained tokens → one optimizer step of the
unclipped policy gradient ``-A log pi`` (the paper's on-policy form: a single update per batch, so
no importance ratio is needed) → log → checkpoint.

Settings: ``rl.kl_coef`` > 0 keeps a frozen reference; the KL goes into the reward as a sequence
penalty ``-β · sum_t KL_t`` when ``rl.kl_in_reward`` (as in the paper), otherwise it is a β-weighted
loss term. Deviation from TRL's RLOO: no PPO-style clipping or multiple epochs (``rl.epochs_per_batch``
and ``rl.mini_batches_per_epoch`` are ignored: exactly one optimizer step per rollout batch).
"""

from __future__ import annotations

import time

import torch

import rlvr
from rlvr.advantages import rloo_advantages
from rlvr.learners import common
from rlvr.losses import kl_estimator


@rlvr.algorithm("rloo")
def run(cfg) -> dict:
    """RLOO: leave-one-out baseline, one unclipped policy-gradient step per batch."""
    return train(cfg)


def train(cfg, model=None, tokenizer=None, tasks=None, eval_fn=None, logger=None) -> dict:
    s = common.setup(cfg, model, tokenizer, tasks, logger, needs_ref=cfg.rl.kl_coef > 0)
    K = cfg.rollout.samples_per_prompt
    history = []
    for step in range(s.start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        # collect + score
        trajs, times = common.rollout(s, step)
        # advantages (with the KL folded into the sequence reward when asked)
        t0 = time.perf_counter()
        batch = common.prepare_batch(s, trajs)
        rewards = torch.tensor([t.reward for t in trajs])  # (N,)
        beta = common.kl_coef(s)
        if beta > 0 and cfg.rl.kl_in_reward:
            kl = kl_estimator(cfg.rl.kl_estimator)(batch.logprobs, batch.ref_logprobs) * batch.loss_mask
            rewards = rewards - beta * kl.sum(-1)  # (N,)
        adv = rloo_advantages(rewards, K)  # (N,)
        batch.advantages = adv[:, None] * batch.loss_mask
        times["time/advantages"] = time.perf_counter() - t0
        # update: one optimizer step on the whole batch
        t0 = time.perf_counter()
        stats = common.update_policy(s, batch, clipped=False, kl_coef=beta, epochs=1,
                                     mini_batches_per_epoch=1, step=step)
        stats["train/kl_coef"] = beta
        common.adapt_kl_coef(s, stats.get("train/kl", 0.0), len(trajs))
        times["time/update"] = time.perf_counter() - t0
        times["time/train_tokens_per_s"] = stats["train/tokens"] / max(times["time/update"], 1e-9)
        # log + checkpoint
        metrics = common.step_metrics(trajs, cfg, times, t_step)
        metrics.update(stats)
        metrics["train/shaped_reward"] = float(rewards.mean())
        common.log_and_checkpoint(s, step, metrics, eval_fn)
        history.append(metrics)
    return common.finish(s, history)
