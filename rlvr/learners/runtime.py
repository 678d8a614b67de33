"""What every learner shares, on-policy and offline: seeding, mixed precision over fp32 master
weights, the learning-rate schedule, the guarded optimizer step and the run directory.

One schedule for all: linear warm-up for ``optim.warmup_steps`` optimizer steps, then constant,
linear or cosine decay to 0. Deviation from ``transformers.get_scheduler``: its warm-up starts at
lr 0, so the first optimizer step is wasted; here step ``i`` of the warm-up runs at
``(i + 1) / warmup_steps`` of the peak.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

from rlvr.core.config import dump_config

log = logging.getLogger(__name__)

#: A run whose optimizer steps are skipped this many times in a row stops: the weights are fine
#: (nothing was applied) but the run is not training.
MAX_SKIPPED_IN_A_ROW = 3


#: ``model.dtype`` values trained with mixed precision.
LOW_PRECISION = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def master_weights_fp32(model, dtype_name: str):
    """Mixed precision (Micikevicius et al. 2018, https://arxiv.org/abs/1710.03740): the weights
    AdamW updates stay float32 whatever ``model.dtype`` says, and compute runs under autocast. A
    bf16 weight cannot hold an update below ~0.4 % of its magnitude (8 mantissa bits): with bf16
    master weights one GRPO step at lr 1e-6 changed 0.38 % of the weights against 97 % in fp32."""
    low = [n for n, p in model.named_parameters() if p.is_floating_point() and p.dtype != torch.float32]
    if low:
        log.info("model.dtype %s: %d parameter tensors up-cast to float32 master weights; forward "
                 "passes run under autocast(%s)", dtype_name, len(low), dtype_name)
        model.float()
    return model


def activation_checkpointing(model, enabled: bool):
    """``model.gradient_checkpointing``: recompute each layer's activations in the backward pass
    (non-reentrant ``torch.utils.checkpoint``, which FSDP2 and frozen inputs work with)."""
    if not enabled:
        return model
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ValueError(f"model.gradient_checkpointing: {type(model).__name__} is not a transformers "
                         "model with activation (gradient) checkpointing")
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_schedule(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int):
    """``LambdaLR`` for ``optim.schedule`` over ``total_steps`` optimizer steps (see the module)."""
    warm, kind, total = optim_cfg.warmup_steps, optim_cfg.schedule, max(1, total_steps)
    if kind not in ("constant", "linear", "cosine"):
        raise ValueError(f"optim.schedule {kind!r} is not constant, linear or cosine")

    def factor(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        if kind == "constant":
            return 1.0
        frac = min(1.0, (i - warm) / max(1, total - warm))
        return 1.0 - frac if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class GuardedStep:
    """Clip, then step the optimizer and the schedule, unless the loss or the gradient norm is not
    finite: then the gradients are dropped *before* anything touches the weights, and the step is
    skipped with a warning. ``MAX_SKIPPED_IN_A_ROW`` skips in a row raise ``FloatingPointError``.
    """

    def __init__(self, optimizer, scheduler, max_grad_norm: float, what: str = "the loss") -> None:
        self.optimizer, self.scheduler, self.what = optimizer, scheduler, what
        self.max_grad_norm = max_grad_norm if max_grad_norm and max_grad_norm > 0 else float("inf")
        self.skipped = self.in_a_row = 0

    def __call__(self, loss: float, step: int) -> float | None:
        """Returns the gradient norm, or None when the step was skipped."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        gn = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if hasattr(gn, "full_tensor"):  # FSDP2: the norm of sharded gradients, a DTensor
            gn = gn.full_tensor()
        if not (math.isfinite(loss) and torch.isfinite(gn)):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.in_a_row += 1
            log.warning("step %d: %s is %s (gradient norm %s); optimizer step skipped, weights "
                        "unchanged", step, self.what, loss, float(gn))
            if self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise FloatingPointError(
                    f"step {step}: {self.in_a_row} optimizer steps in a row had a non-finite "
                    f"{self.what} or gradient; the weights were left as they were; lower optim.lr "
                    f"or set optim.max_grad_norm")
            return None
        self.in_a_row = 0
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(gn)


def run_dir(cfg, output_dir: str | Path | None = None) -> Path:
    """The run directory, with the run's ``config.yaml`` (kept as it is when the run resumes)."""
    out = Path(output_dir or cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not ((out / "config.yaml").exists() and cfg.run.resume):
        dump_config(cfg, out / "config.yaml")
    return out
