"""Data-parallel training under ``torchrun`` (torch.distributed; gloo on CPU, NCCL on GPU).

On-policy learners: each step's prompts are split into contiguous blocks, one per rank, so a group
of ``samples_per_prompt`` never crosses ranks and the ranks' batches, concatenated in rank order,
are the single-process batch. What must be global is made global here, visibly:

- advantages are computed on the gathered batch (batch-level baselines and whitening see every
  trajectory), then each rank keeps its own rows;
- the loss normalisers (sequences and tokens of a mini-batch) are all-reduced, and so are the
  gradients (summed, not averaged), so N ranks produce the single-process gradient of the same
  global batch (``tests/test_distributed.py``);
- rank 0 alone logs, writes metrics and saves checkpoints.

Offline learners (SFT, reward model, DPO; :mod:`rlvr.learners.offline_common`) walk the same
seeded batches on every rank, each rank training on its near-equal contiguous share of a batch
(:meth:`World.share`), with the batch's normaliser, metric sums and gradients summed here
(``tests/test_distributed_offline.py``).

``run.parallel`` chooses how the on-policy ranks hold the weights: ``replicate`` (default; every
rank the whole model, gradients all-reduced by :meth:`World.sum_grads_`, a checkpoint in the
one-process format) or ``fsdp`` (FSDP2 ``fully_shard``, which sums the gradients itself, DCP
checkpoints; :mod:`rlvr.learners.sharding`). Checkpoints of either resume on any world size.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    sharded: bool = False  # the policy is FSDP2-sharded (run.parallel = fsdp): FSDP sums its gradients

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This rank's contiguous, near-equal share of ``items`` (any length; the first
        ``len(items) % size`` ranks get one more). Concatenated in rank order, the shares are
        ``items``. For the short last batch of an offline epoch; a rank may get nothing."""
        k, extra = divmod(len(items), self.size)
        start = self.rank * k + min(self.rank, extra)
        return items[start:start + k + (self.rank < extra)]

    def check_divides(self, key: str, value: int, what: str) -> None:
        """Refuse a batch setting whose ``value`` the world size does not divide, naming ``key``."""
        if self.active and value % self.size:
            raise ValueError(f"{key} = {value} must be a multiple of the {self.size} training ranks "
                             f"(each rank takes an equal share of the {what})")

    def block(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (whose length the world size divides)."""
        if len(items) % self.size:
            raise ValueError(f"{len(items)} prompts do not split over {self.size} ranks")
        k = len(items) // self.size
        return items[self.rank * k:(self.rank + 1) * k]

    # -- collectives (no-ops in one process) ------------------------------------------------------

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce ``t`` in place (sum)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sum_float(self, x: float) -> float:
        return float(self.sum_(torch.tensor(float(x), dtype=torch.float64))) if self.active else x

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Sum a dict of numbers over ranks in one all-reduce (every rank passes the same keys)."""
        if not self.active or not values:
            return dict(values)
        keys = sorted(values)
        t = self.sum_(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
        return dict(zip(keys, t.tolist()))

    def sum_grads_(self, params) -> None:
        """Sum the gradients over ranks (each rank's loss already carries the global normaliser).

        A rank whose share of the batch was empty (an offline epoch's short last batch) has no
        gradients: where any rank has one, the others contribute zeros; a parameter no rank
        touched keeps ``grad = None`` (so AdamW skips it, as in one process)."""
        if not self.active or self.sharded:  # FSDP2 has reduce-scattered them already
            return
        params = [p for p in params if p.requires_grad]
        has = self.sum_(torch.tensor([p.grad is not None for p in params], dtype=torch.int32))
        for p, n in zip(params, has.tolist()):
            if n and p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            i = 0
            for g in grads:
                g.copy_(flat[i:i + g.numel()].view_as(g))
                i += g.numel()

    def row_counts(self, local_rows: int) -> list[int]:
        """Every rank's number of rows, in rank order (one exchange per batch)."""
        if not self.active:
            return [local_rows]
        sizes = [None] * self.size
        dist.all_gather_object(sizes, local_rows)
        return sizes

    def gather_rows(self, t: torch.Tensor | None, sizes: list[int]) -> torch.Tensor | None:
        """(B, ...) on each rank → (sum of ``sizes``, ...) in rank order (the ranks' B may
        differ); a (B, T) tensor is right-padded with zeros to the longest T first."""
        if not self.active or t is None:
            return t
        if t.dim() == 2:
            width = torch.tensor(t.shape[1])
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            t = torch.nn.functional.pad(t, (0, int(width) - t.shape[1]))
        rows = max(sizes)  # gloo gathers equal shapes only: pad the rows, cut them off after
        t = torch.cat([t, t.new_zeros((rows - t.shape[0],) + tuple(t.shape[1:]))])
        parts = [t.new_zeros((rows,) + tuple(t.shape[1:])) for _ in sizes]
        dist.all_gather(parts, t.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    def my_rows(self, t: torch.Tensor, sizes: list[int], width: int | None = None) -> torch.Tensor:
        """This rank's rows of a tensor gathered with ``sizes``, cut back to ``width`` columns."""
        if not self.active:
            return t
        start = sum(sizes[:self.rank])
        out = t[start:start + sizes[self.rank]]
        return out[:, :width] if width is not None and out.dim() == 2 else out

    def gather_objects(self, items: list) -> list:
        if not self.active:
            return items
        parts = [None] * self.size
        dist.all_gather_object(parts, items)
        return [x for p in parts for x in p]

    def broadcast_module_(self, module: torch.nn.Module) -> None:
        """Every rank starts from rank 0's weights."""
        if self.active:
            for p in module.state_dict().values():
                if isinstance(p, torch.Tensor):
                    dist.broadcast(p, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched_world_size() -> int:
    """The number of training ranks ``torchrun`` started (``WORLD_SIZE``; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_world(device: str) -> tuple[World, str]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1) and return the world and
    this rank's device (``cuda:LOCAL_RANK`` on GPUs)."""
    size = launched_world_size()
    if size <= 1:
        return World(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        atexit.register(_leave_group)  # a group left to the interpreter's teardown can abort the exit
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return World(dist.get_rank(), dist.get_world_size()), device


LEAVE_TIMEOUT_S = 60  # how long a rank waits at exit for the others before leaving anyway


def _leave_group() -> None:
    """Destroy the process group this process joined, before the interpreter tears down, once
    every rank has got here: a gloo group destroyed during teardown, or while another rank still
    talks to it (rank 0 writing the last checkpoint as rank 1 leaves), can end a finished run in
    SIGABRT ("terminate called without an active exception") with its results written. A rank
    that never arrives (it crashed) costs ``LEAVE_TIMEOUT_S`` at most, not a hang."""
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":  # the one backend with a barrier that can time out
            from datetime import timedelta

            dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
    except Exception:  # a missing rank: leave all the same
        pass
    dist.destroy_process_group()


class NullLogger:
    """The metrics logger of ranks other than 0: they compute the same numbers, rank 0 writes them."""

    path = None

    def log(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass
