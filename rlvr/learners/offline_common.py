"""Plumbing shared by the offline learners (SFT, reward model, DPO): sequence log-probabilities
(through :mod:`rlvr.batch`), batching over epochs, the optimizer and schedule, metrics and the run
directory. No loss math here — that lives in :mod:`rlvr.pref_losses`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from rlvr.batch import collate, token_logprobs
from rlvr.checkpoint import save_model_dir
from rlvr.learners.runtime import lr_schedule, run_dir as prepare_run_dir, seed_everything  # noqa: F401
from rlvr.metrics import MetricsLogger
from rlvr.types import Trajectory

log = logging.getLogger(__name__)


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


def open_logger(output_dir: str | Path, cfg, total_steps: int):
    """The project's :class:`rlvr.metrics.MetricsLogger` (``metrics.jsonl``, progress bar,
    optional TensorBoard and Weights & Biases)."""
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
    """``final/``, written all or nothing (:func:`rlvr.checkpoint.save_model_dir`)."""
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
