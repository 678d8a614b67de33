"""GRPO: group-relative policy optimisation (Shao et al. 2024, https://arxiv.org/abs/2402.03300).

Each step: G = ``rollout.samples_per_prompt`` samples of ``rl.prompts_per_step`` prompts →
rewards → group advantages ``(r - mean) / (std + eps)`` broadcast over each trajectory's trained
tokens → ``rl.epochs_per_batch`` × ``rl.mini_batches_per_epoch`` optimizer steps of the clipped
surrogate on the *behaviour logprobs recorded at sampling time* (saved once, reused by every
epoch) → log → checkpoint.

Settings where published implementations disagree (defaults first):
- ``rl.std_normalize``: unbiased (G-1, TRL / torch) | biased (G) | none (Dr. GRPO).
- ``rl.loss_agg``: token-mean (DAPO, verl default) | seq-mean-token-mean (the GRPO paper) |
  seq-mean-token-sum-norm (Dr. GRPO).
- KL: a β-weighted loss term with the k3 estimator (the paper) unless ``rl.kl_in_reward``;
  ``rl.kl_coef = 0`` (DAPO, Dr. GRPO) keeps no reference model at all.
- ``rl.filter_zero_variance``: drop groups whose rewards are all equal before the update (DAPO's
  dynamic sampling without re-sampling); their share (``rollout/zero_variance_groups``) is logged
  either way, the dropped groups as ``train/groups_dropped``.
Deviation: the behaviour logprobs come from the sampling engine rather than a recomputation pass;
on CPU the engine shares the training model, so they are the same numbers up to float rounding.
"""

from __future__ import annotations

import time

import torch

import rlvr
from rlvr.advantages import grpo_advantages, zero_variance_groups
from rlvr.learners import common


@rlvr.algorithm("grpo")
def run(cfg) -> dict:
    """GRPO: group-relative advantages, clipped surrogate, optional KL to a frozen reference."""
    return train(cfg)


def train(cfg, model=None, tokenizer=None, tasks=None, eval_fn=None, logger=None) -> dict:
    s = common.setup(cfg, model, tokenizer, tasks, logger, needs_ref=cfg.rl.kl_coef > 0)
    G = cfg.rollout.samples_per_prompt
    history = []
    for step in range(s.start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        # collect + score (the environment's verifiers score inside collect; reward models after)
        trajs, times = common.rollout(s, step)
        # advantages
        t0 = time.perf_counter()
        rewards = torch.tensor([t.reward for t in trajs])  # (N,)
        adv = grpo_advantages(rewards, G, cfg.rl.std_normalize)  # (N,)
        keep = list(range(len(trajs)))
        if cfg.rl.filter_zero_variance:
            flat = zero_variance_groups(rewards, G)  # (N/G,)
            keep = [i for i in keep if not flat[i // G]]
        times["time/advantages"] = time.perf_counter() - t0
        # update
        t0 = time.perf_counter()
        stats = {"train/optimizer_steps": 0}
        if keep:
            batch = common.prepare_batch(s, [trajs[i] for i in keep], adv[keep])
            beta = common.kl_coef(s)
            stats = common.update_policy(s, batch, clipped=True, kl_coef=beta, step=step)
            stats["train/kl_coef"] = beta
            common.adapt_kl_coef(s, stats.get("train/kl", 0.0), len(keep))
        times["time/update"] = time.perf_counter() - t0
        times["time/train_tokens_per_s"] = stats.get("train/tokens", 0) / max(times["time/update"], 1e-9)
        # log + checkpoint
        metrics = common.step_metrics(trajs, cfg, times, t_step)
        metrics.update(stats)
        metrics["train/trajectories_used"] = len(keep)
        metrics["train/groups_dropped"] = (len(trajs) - len(keep)) // G
        common.log_and_checkpoint(s, step, metrics, eval_fn)
        history.append(metrics)
    return common.finish(s, history)
