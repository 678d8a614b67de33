"""Supervised fine-tuning on completion tokens only — the cold start of R1-style pipelines and the
training step of rejection-sampling fine-tuning.

The loss mask rule is the RL one: a token is trained exactly when ``loss_mask == 1`` (completions,
assistant turns; never prompts, never tool observations). The loss is the token-mean negative
log-likelihood over the whole optimizer batch: sums of every micro-batch are divided once by the
batch's token count, so micro-batching does not change the gradient.

Loop: data → (batch → micro-batches → backward) → clip → step → log → save.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import torch

import rlvr
from rlvr.algorithms.pref_losses import masked_nll_sum
from rlvr.core.models import load_policy
from rlvr.core.types import Trajectory
from rlvr.data.preferences import load_sft_data
from rlvr.learners import offline_common as oc
from rlvr.learners.batch import collate, token_logprobs
from rlvr.learners.distributed import World
from rlvr.learners.runtime import GuardedStep

log = logging.getLogger(__name__)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def nll_of(model, trajectories: Sequence[Trajectory], pad_id: int, micro_batch_size: int = 8) -> float:
    """Token-mean NLL of the trained tokens (for evaluation), no gradient."""
    total, count = 0.0, 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for chunk in oc.micro_chunks(list(range(len(trajectories))), micro_batch_size):
            mb = collate([trajectories[i] for i in chunk], pad_id).to(_device_of(model))
            lp, _ = token_logprobs(model, mb, 1.0, with_entropy=False, only=mb.loss_mask)
            s, n = masked_nll_sum(lp, mb.loss_mask)
            total, count = total + float(s), count + float(n)
    model.train(was_training)
    return total / max(count, 1.0)


def accumulate_gradients(model, batch: Sequence[Trajectory], pad_id: int, micro_batch_size: int,
                         batch_tokens: float | None = None, by_length: bool = True) -> float:
    """Backward the token-mean NLL of one optimizer batch through micro-batches; returns the loss.

    Each micro-batch's summed NLL is divided by the token count of the whole batch — the one
    normaliser — so the accumulated gradient does not depend on ``micro_batch_size``, nor on
    ``by_length`` (``optim.length_buckets``: micro-batches cut from the rows ordered by length).
    Under ``torchrun`` ``batch`` is this rank's share and ``batch_tokens`` the all-reduced count
    of the whole batch; the returned loss is then this rank's part of it.
    """
    dev = _device_of(model)
    if batch_tokens is None:
        batch_tokens = sum(t.num_sampled for t in batch)
    loss_sum = 0.0
    if not batch:  # this rank's share of an epoch's short last batch: nothing to backward
        return loss_sum
    for mb in collate(batch, pad_id).split(micro_batch_size, by_length=by_length):
        mb = mb.to(dev)
        lp, _ = token_logprobs(model, mb, 1.0, with_entropy=False, only=mb.loss_mask)
        s, _ = masked_nll_sum(lp, mb.loss_mask)
        (s / batch_tokens).backward()
        loss_sum += float(s.detach())
    return loss_sum / batch_tokens


def train_on_trajectories(model, tokenizer, trajectories: Sequence[Trajectory], cfg,
                          logger=None, world: World = World()) -> dict[str, Any]:
    """Train ``model`` in place on trajectories' ``loss_mask == 1`` tokens.

    ``pref.epochs`` passes in batches of ``pref.batch_size`` sequences (micro-batches of
    ``optim.micro_batch_size``), capped at ``run.steps`` optimizer steps when that is > 0.
    Under ``torchrun`` each rank trains on its share of every batch (``world``).
    Returns ``{"steps", "loss_first", "loss_last", "tokens"}``.
    """
    trajectories = [t for t in trajectories if t.num_sampled > 0]
    if not trajectories:
        raise ValueError("SFT got no trajectory with a trained token (loss_mask all 0)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n, bs = len(trajectories), max(1, cfg.pref.batch_size)
    total = oc.planned_steps(n, bs, cfg.pref.epochs, cfg.run.steps)
    opt, sched = oc.make_optimizer(model.parameters(), cfg.optim, total)
    guard = GuardedStep(opt, sched, cfg.optim.max_grad_norm, "the SFT loss")
    model.train()
    losses: list[float] = []
    tokens = 0
    for step, idx in enumerate(oc.batches(n, bs, epochs=cfg.pref.epochs, max_steps=cfg.run.steps,
                                          seed=cfg.run.seed), start=1):
        t0 = time.perf_counter()
        batch = [trajectories[i] for i in world.share(idx)]  # this rank's rows
        batch_tokens = int(world.sum_float(sum(t.num_sampled for t in batch)))  # the whole batch's
        loss = accumulate_gradients(model, batch, pad_id, cfg.optim.micro_batch_size, batch_tokens,
                                    cfg.optim.length_buckets)
        loss = oc.sync_step(world, opt, {"loss": loss})["loss"]
        grad_norm = guard(loss, step)  # None: skipped, the weights untouched
        if grad_norm is None:
            continue
        losses.append(loss)
        tokens += batch_tokens
        oc.log_metrics(logger, step, {"train/loss": loss, "train/grad_norm": grad_norm,
                                      "train/tokens": batch_tokens, "train/lr": sched.get_last_lr()[0],
                                      "time/step": time.perf_counter() - t0})
    model.eval()
    return {"steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1], "tokens": tokens}


@rlvr.algorithm("sft")
def run(cfg, *, model=None, tokenizer=None, logger=None) -> dict[str, Any]:
    """Supervised fine-tuning on completion tokens (prompt/completion, messages or token rows)."""

    world, device, out = oc.start(cfg, "sft")
    if model is None or tokenizer is None:
        model, tokenizer = load_policy(cfg.model, device)
    oc.place(world, model, device, cfg)
    train, held_out = oc.train_and_held_out(load_sft_data, cfg, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eval_before = nll_of(model, held_out, pad_id, cfg.optim.micro_batch_size) if world.main else None
    stats = oc.train_logged(
        lambda logger: train_on_trajectories(model, tokenizer, train, cfg, logger, world),
        logger, out, cfg, len(train), world)
    if not world.main:
        return oc.other_rank_report(world, "sft", stats)
    eval_after = nll_of(model, held_out, pad_id, cfg.optim.micro_batch_size)
    final = oc.save_pretrained(model, tokenizer, out / "final")
    report = {"algorithm": "sft", "train_rows": len(train), "eval_rows": len(held_out),
              "eval_nll_before": eval_before, "eval_nll_after": eval_after,
              "model_dir": str(final), **{f"train_{k}": v for k, v in stats.items()}}
    report["eval"] = {"eval/nll_before": eval_before, "eval/nll": eval_after}  # what `rlvr train` prints
    oc.write_report(out, report)
    log.info("sft: eval NLL %.3f → %.3f; model saved to %s", eval_before, eval_after, final)
    world.barrier()
    return report
