"""Plumbing shared by the offline learners (SFT, reward model, DPO): sequence log-probabilities
(through :mod:`rlvr.batch`), batching over epochs, the optimizer and schedule, metrics and the run
directory. No loss math here — that lives in :mod:`rlvr.pref_losses`.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from rlvr.batch import collate, token_logprobs
from rlvr.types import Trajectory


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
    lp, _ = token_logprobs(model, batch, 1.0, with_entropy=False)  # (B, T)
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
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * max(1, epochs)
    return min(total, max_steps) if max_steps else total


def make_optimizer(params, optim_cfg, total_steps: int):
    """AdamW with linear warm-up then constant / linear / cosine decay (``optim.schedule``)."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    warm, total, kind = optim_cfg.warmup_steps, max(1, total_steps), optim_cfg.schedule
    if kind not in ("constant", "linear", "cosine"):
        raise ValueError(f"optim.schedule {kind!r} is not constant, linear or cosine")

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        frac = min(1.0, (step - warm) / max(1, total - warm))
        return 1.0 - frac if kind == "linear" else 0.5 * (1 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def clip_and_step(model, opt, sched, max_grad_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], max_grad_norm if max_grad_norm > 0 else float("inf"))
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


def micro_chunks(idx: list[int], micro_batch_size: int) -> Iterator[list[int]]:
    size = max(1, micro_batch_size)
    for i in range(0, len(idx), size):
        yield idx[i:i + size]


class _JsonlLogger:
    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.write_text("")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        pass


def open_logger(output_dir: str | Path, cfg, total_steps: int):
    """The project's :class:`rlvr.metrics.MetricsLogger` (``metrics.jsonl``, progress bar,
    optional TensorBoard and Weights & Biases)."""
    try:
        from rlvr.metrics import MetricsLogger
    except ImportError:  # a build without the metrics module: plain metrics.jsonl
        return _JsonlLogger(output_dir)
    return MetricsLogger(output_dir, total_steps=total_steps, progress=cfg.run.progress,
                         tensorboard=cfg.run.log_tensorboard,
                         wandb_project=getattr(cfg.run, "wandb_project", None), wandb_config=cfg)


def log_metrics(logger, step: int, metrics: dict[str, Any]) -> None:
    if logger is not None:
        logger.log(step, metrics)


def close_logger(logger) -> None:
    if logger is not None:
        logger.close()


def prepare_run_dir(cfg, output_dir: str | Path | None) -> Path:
    """The run directory, with ``config.yaml`` written unless the caller already wrote one."""
    from rlvr.config import dump_config

    out = Path(output_dir or cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.yaml").exists():
        dump_config(cfg, out / "config.yaml")
    return out


def write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def save_pretrained(model, tokenizer, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


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
