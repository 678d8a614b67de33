"""Reward-model training with the Bradley–Terry loss (Ouyang et al. 2022, §3.5).

Loop: pairs → (batch → micro-batches: score chosen and rejected → BT loss → backward) → clip →
step → log; then pairwise accuracy on held-out pairs, the reference mean (held-out chosen
responses) for reward normalisation, and ``final/`` saved as a transformers model.

Deviation from InstructGPT: pairs are not grouped by prompt into K-choose-2 comparisons; each row
is one pair (the format of TRL and the hub's preference sets).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Sequence

import torch

import rlvr
from rlvr.algorithms.pref_losses import bradley_terry_loss
from rlvr.data.preferences import PrefExample, load_preference_data
from rlvr.learners import offline_common as oc
from rlvr.learners.distributed import World
from rlvr.learners.runtime import GuardedStep
from rlvr.rewards.reward_model import build_reward_model, save_reward_model, score_ids

log = logging.getLogger(__name__)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.no_grad()
def evaluate_pairs(model, tokenizer, pairs: Sequence[PrefExample], micro_batch_size: int = 8) -> dict[str, Any]:
    """Pairwise accuracy (chosen scored strictly higher), mean margin and loss; the scores of the
    chosen responses come back too, as the reference set for normalisation."""
    was_training = model.training
    model.eval()
    pad = _pad_id(tokenizer)
    chosen, rejected = [], []
    for chunk in oc.micro_chunks(list(range(len(pairs))), micro_batch_size):
        chosen += score_ids(model, [pairs[i].chosen_seq()[0] for i in chunk], pad).tolist()
        rejected += score_ids(model, [pairs[i].rejected_seq()[0] for i in chunk], pad).tolist()
    model.train(was_training)
    c, r = torch.tensor(chosen), torch.tensor(rejected)
    return {"accuracy": float((c > r).float().mean()), "margin": float((c - r).mean()),
            "loss": float(bradley_terry_loss(c, r).losses.mean()), "chosen_scores": chosen}


def train_reward_model(model, tokenizer, pairs: Sequence[PrefExample], cfg, logger=None,
                       world: World = World()) -> dict[str, Any]:
    """Bradley–Terry training in place; per-step loss, accuracy and margin go to ``logger``. Under
    ``torchrun`` each rank trains on its share of every batch (``world``)."""

    pad = _pad_id(tokenizer)
    n, bs = len(pairs), max(1, cfg.pref.batch_size)
    opt, sched = oc.make_optimizer(model.parameters(), cfg.optim,
                                   oc.planned_steps(n, bs, cfg.pref.epochs, cfg.run.steps))
    guard = GuardedStep(opt, sched, cfg.optim.max_grad_norm, "the reward-model loss")
    model.train()
    history: list[dict[str, float]] = []
    for step, idx in enumerate(oc.batches(n, bs, epochs=cfg.pref.epochs, max_steps=cfg.run.steps,
                                          seed=cfg.run.seed), start=1):
        t0 = time.perf_counter()
        loss_sum, correct, margin_sum = 0.0, 0.0, 0.0
        mine = world.share(idx)  # this rank's pairs; the normaliser is the whole batch's
        k = world.sum_float(len(mine))
        for chunk in oc.micro_chunks(mine, cfg.optim.micro_batch_size):
            # chosen and rejected in one forward: one padded batch of 2×len(chunk) sequences
            seqs = [pairs[i].chosen_seq()[0] for i in chunk] + [pairs[i].rejected_seq()[0] for i in chunk]
            scores = score_ids(model, seqs, pad)  # (2m,)
            out = bradley_terry_loss(scores[: len(chunk)], scores[len(chunk):])
            (out.losses.sum() / k).backward()  # mean over the optimizer batch, divided once
            loss_sum += float(out.losses.detach().sum())
            correct += float((out.chosen_rewards > out.rejected_rewards).sum())
            margin_sum += float((out.chosen_rewards - out.rejected_rewards).sum())
        sums = oc.sync_step(world, opt, {"loss": loss_sum, "correct": correct, "margin": margin_sum})
        loss_sum, correct, margin_sum = sums["loss"], sums["correct"], sums["margin"]
        grad_norm = guard(loss_sum / k, step)  # None: skipped, the weights untouched
        m = {"train/loss": loss_sum / k, "pref/accuracy": correct / k, "pref/margin": margin_sum / k}
        oc.record_step(logger, history, step, m, grad_norm=grad_norm, guard=guard, scheduler=sched,
                       t0=t0)
    model.eval()
    return oc.summary(history, accuracy_last="pref/accuracy")


@rlvr.algorithm("rm")
def run(cfg, *, model=None, tokenizer=None, logger=None) -> dict[str, Any]:
    """Bradley–Terry reward model on preference pairs; reports pairwise accuracy."""

    world, device, out = oc.start(cfg, "rm")
    if model is None or tokenizer is None:
        model, tokenizer = build_reward_model(cfg.model, device)
    oc.place(world, model, device, cfg)
    pairs, held = oc.train_and_held_out(load_preference_data, cfg, tokenizer)
    before = evaluate_pairs(model, tokenizer, held, cfg.optim.micro_batch_size) if world.main else None
    stats = oc.train_logged(
        lambda logger: train_reward_model(model, tokenizer, pairs, cfg, logger, world),
        logger, out, cfg, len(pairs), world)
    if not world.main:
        return oc.other_rank_report(world, "rm", stats)
    after = evaluate_pairs(model, tokenizer, held, cfg.optim.micro_batch_size)
    ref = after.pop("chosen_scores")
    before.pop("chosen_scores")
    meta = {"reference_mean": statistics.fmean(ref),
            "reference_std": statistics.pstdev(ref) if len(ref) > 1 else 1.0,
            "reference_set": f"{cfg.data.eval or cfg.data.train} (held-out chosen responses, n={len(ref)})",
            "eval_accuracy": after["accuracy"]}
    final = save_reward_model(model, tokenizer, out / "final", meta)
    report = {"algorithm": "rm", "train_pairs": len(pairs), "eval_pairs": len(held),
              "eval_accuracy_before": before["accuracy"], "eval_accuracy": after["accuracy"],
              "eval_margin": after["margin"], "eval_loss": after["loss"],
              "reference_mean": meta["reference_mean"], "model_dir": str(final),
              **{f"train_{k}": v for k, v in stats.items()}}
    report["eval"] = {"eval/accuracy_before": before["accuracy"], "eval/accuracy": after["accuracy"],
                          "eval/margin": after["margin"]}  # what `rlvr train` prints
    oc.write_report(out, report)
    log.info("rm: held-out pairwise accuracy %.3f → %.3f; saved to %s",
             before["accuracy"], after["accuracy"], final)
    world.barrier()
    return report
