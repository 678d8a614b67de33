"""Plumbing shared by the offline learners (SFT, reward model, DPO): sequence log-probabilities
(through :mod:`rlvr.learners.batch`), batching over epochs, the optimizer and schedule, metrics and the run
directory. No loss math here — that lives in :mod:`rlvr.algorithms.pref_losses`.

Under ``torchrun`` (replicated data parallelism, :mod:`rlvr.learners.distributed`) every rank
loads the same data and walks the same seeded batches; each rank trains on its contiguous share
of each optimizer batch, the normaliser (rows or tokens of the whole batch) and the gradients are
summed over ranks, so N ranks take the single-process step. Rank 0 alone logs, evaluates and
writes ``report.json`` and ``final/``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from rlvr.core.models import pick_device
from rlvr.core.types import Trajectory
from rlvr.learners.batch import collate, token_logprobs
from rlvr.learners.checkpoint import save_model_dir
from rlvr.learners.distributed import World, init_world
from rlvr.learners.metrics import MetricsLogger
from rlvr.learners.runtime import activation_checkpointing, lr_schedule
from rlvr.learners.runtime import run_dir as prepare_run_dir
from rlvr.learners.runtime import seed_everything

log = logging.getLogger(__name__)


def start(cfg, learner: str) -> tuple[World, str, Path]:
    """Seed, join the ``torchrun`` world (rank 0 of 1 without it) and prepare the run directory
    (rank 0 writes it). Returns the world, this rank's device and the run directory. A
    ``pref.batch_size`` the ranks cannot share equally, and LoRA, are refused, naming the key."""
    if cfg.model.lora_rank:
        raise ValueError(f"model.lora_rank > 0 is not supported by the {learner} learner; use full "
                         f"fine-tuning")
    seed_everything(cfg.run.seed)
    world, device = init_world(pick_device(cfg.run.device))
    if world.active and cfg.run.parallel != "replicate":
        raise ValueError(f"run.parallel = {cfg.run.parallel} is not supported by the {learner} "
                         "learner; offline learners replicate the model (run.parallel replicate)")
    world.check_divides("pref.batch_size", max(1, cfg.pref.batch_size), "rows of every batch")
    out = prepare_run_dir(cfg) if world.main else Path(cfg.run.output_dir)
    world.barrier()
    return world, device, out


def place(world: World, model, device: str, cfg=None):
    """The model on this rank's device, with rank 0's weights on every rank; with ``cfg``, the
    trained model, ``model.gradient_checkpointing`` applied."""
    model.to(device)
    world.broadcast_module_(model)
    return activation_checkpointing(model, cfg is not None and cfg.model.gradient_checkpointing)


def sync_step(world: World, optimizer, sums: dict[str, float]) -> dict[str, float]:
    """After every rank's backward of one batch: sum the gradients and the metric sums over ranks."""
    world.sum_grads_([p for g in optimizer.param_groups for p in g["params"]])
    return world.sum_floats(sums)


def _as_trajectory(seq) -> Trajectory:
    if isinstance(seq, Trajectory):
        return seq
    ids, mask = seq
    first = mask.index(1) if 1 in mask else len(mask)
    return Trajectory(list(ids), list(mask), [0.0] * len(ids), first)


def sequence_logps(model, seqs: Sequence, pad_id: int, device):
    """Sum of ``loss_mask == 1`` token log-probabilities and their count per sequence, ``(N,)``
    each. ``seqs`` holds trajectories or ``(token_ids, loss_mask)`` pairs."""
    batch = collate([_as_trajectory(s) for s in seqs], pad_token_id=pad_id).to(device)
    lp, _ = token_logprobs(model, batch, 1.0, with_entropy=False, only=batch.loss_mask)  # (B, T)
    return (lp * batch.loss_mask).sum(-1), batch.loss_mask.sum(-1)


def batches(n: int, batch_size: int, *, epochs: int, max_steps: int, seed: int,
            shuffle: bool = True) -> Iterator[list[int]]:
    """Index batches over ``epochs`` passes (reshuffled each pass), stopping after ``max_steps``
    batches when ``max_steps > 0``. A short last batch is kept: no example is dropped."""
    if n == 0:
        raise ValueError("no training examples")
    rng = random.Random(seed)
    step = 0
    for _ in range(max(1, epochs)):
        order = list(range(n))
        if shuffle:
            rng.shuffle(order)
        for start in range(0, n, batch_size):
            if max_steps and step >= max_steps:
                return
            yield order[start:start + batch_size]
            step += 1


def planned_steps(n: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``n`` rows, capped at ``run.steps`` when > 0."""
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * max(1, epochs)
    if max_steps > total:
        log.warning("run.steps = %d, but pref.epochs = %d pass(es) over %d rows in batches of %d "
                    "make only %d optimizer steps; raise pref.epochs for more", max_steps, epochs,
                    n, batch_size, total)
    return min(total, max_steps) if max_steps else total


def make_optimizer(params, optim_cfg, total_steps: int):
    """AdamW and the one learning-rate schedule (:func:`rlvr.learners.runtime.lr_schedule`)."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    return opt, lr_schedule(opt, optim_cfg, total_steps)


def micro_chunks(idx: list[int], micro_batch_size: int) -> Iterator[list[int]]:
    size = max(1, micro_batch_size)
    for i in range(0, len(idx), size):
        yield idx[i:i + size]


def open_logger(output_dir: str | Path, cfg, total_steps: int, world: World = World()):
    """The project's :class:`rlvr.learners.metrics.MetricsLogger` (``metrics.jsonl``, progress bar,
    optional TensorBoard and Weights & Biases); None on ranks other than 0."""
    if not world.main:
        return None
    return MetricsLogger(output_dir, total_steps=total_steps, progress=cfg.run.progress,
                         tensorboard=cfg.run.log_tensorboard,
                         wandb_project=getattr(cfg.run, "wandb_project", None), wandb_config=cfg)


def log_metrics(logger, step: int, metrics: dict[str, Any]) -> None:
    if logger is not None:
        logger.log(step, metrics)


def close_logger(logger) -> None:
    if logger is not None:
        logger.close()


def write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def save_pretrained(model, tokenizer, path: Path) -> Path:
    """``final/``, written all or nothing (:func:`rlvr.learners.checkpoint.save_model_dir`)."""
    return save_model_dir(model, tokenizer, path)


def split_holdout(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """``(train, held_out)``: a seeded ``fraction`` of the items held out (at least one when the
    fraction is > 0 and there are two or more items); ``fraction == 0`` evaluates on the training set."""
    if fraction <= 0 or len(items) < 2:
        return items, items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    k = min(len(items) - 1, max(1, round(len(items) * fraction)))
    held = set(order[:k])
    return ([x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held])


def train_and_held_out(load: Callable, cfg, tokenizer) -> tuple[list, list]:
    """The training rows and the held-out ones: ``data.eval`` when set, else a seeded
    ``pref.eval_fraction`` of ``data.train``. ``load(spec, tokenizer, limit=, max_length=, seed=)``."""
    kw = dict(limit=cfg.data.limit, max_length=cfg.pref.max_length)
    rows = load(cfg.data.train, tokenizer, seed=cfg.run.seed, **kw)
    if cfg.data.eval:
        return rows, load(cfg.data.eval, tokenizer, seed=cfg.run.seed + 1, **kw)
    return split_holdout(rows, cfg.pref.eval_fraction, cfg.run.seed)


def train_logged(train: Callable[[Any], dict], logger, out: Path, cfg, n_rows: int,
                 world: World) -> dict:
    """``train(logger)`` with the caller's logger, or with one opened on the run directory for
    ``n_rows`` examples (and closed, whatever happens)."""
    own = logger is None
    if own:
        logger = open_logger(out, cfg, planned_steps(n_rows, max(1, cfg.pref.batch_size),
                                                     cfg.pref.epochs, cfg.run.steps), world)
    try:
        return train(logger)
    finally:
        if own:
            close_logger(logger)


def other_rank_report(world: World, learner: str, stats: dict) -> dict:
    """A rank other than 0 returns this: rank 0 evaluates and writes (the weights are the same on
    every rank); the barrier waits for it."""
    world.barrier()
    return {"algorithm": learner, "rank": world.rank, **{f"train_{k}": v for k, v in stats.items()}}


def record_step(logger, history: list[dict], step: int, metrics: dict, *, grad_norm, guard,
                scheduler, t0: float) -> None:
    """Log one optimizer step's ``metrics`` with what every offline learner adds: the gradient
    norm (NaN for a skipped step), the skipped steps so far, the learning rate and the time."""
    metrics.update({"train/grad_norm": grad_norm or math.nan, "train/skipped_steps": guard.skipped,
                    "train/lr": scheduler.get_last_lr()[0], "time/step": time.perf_counter() - t0})
    history.append(metrics)
    log_metrics(logger, step, metrics)


def summary(history: list[dict], **last: str) -> dict:
    """Steps and first/last loss of a training loop, plus ``name=metric`` of its last step."""
    return {"steps": len(history), "loss_first": history[0]["train/loss"],
            "loss_last": history[-1]["train/loss"], **{k: history[-1][m] for k, m in last.items()}}
