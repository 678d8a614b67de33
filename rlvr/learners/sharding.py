"""FSDP2 sharding of the on-policy learners under ``torchrun`` (``run.parallel: fsdp``).

The policy and its frozen reference are wrapped with ``torch.distributed.fsdp.fully_shard``
(FSDP2), each decoder layer (the classes a transformers model lists in ``_no_split_modules``)
then the whole model, on a one-dimensional ``DeviceMesh`` of every rank. Each rank keeps
``1 / world size`` of the parameters, gradients and AdamW state; a layer's full parameters exist
only while it runs.

Normalisation stays "sum, then divide by the all-reduced count": the loss already carries the
global normaliser (:func:`rlvr.learners.common.global_norm`), so the ranks' gradients must be
*summed*. FSDP2 averages by default; every wrapped module gets ``set_gradient_divide_factor(1)``
with ``set_force_sum_reduction_for_comms(True)``, a plain SUM reduce-scatter (a divide factor alone
uses NCCL's PREMUL_SUM, which gloo refuses). ``tests/test_distributed.py`` checks the result is
the single-process gradient.

Rollouts: generation runs many forward passes whose number differs between ranks (each rank's
episodes end when they end), and every forward of a sharded model is a collective, so the
in-process HF engine generates with its own plain copy of the policy (:class:`FullWeightsEngine`).
After each update every rank gathers the full weights into it (one all-gather per step). That
copy costs one full set of parameters per rank; the gradients and optimizer state (three times
the parameters under AdamW in fp32) stay sharded.

Checkpoints (:func:`save_sharded_checkpoint`, :func:`load_checkpoint`) hold the model and
optimizer as a torch.distributed.checkpoint (DCP) directory, resharded on load to any world size,
one process included; ``state.pt`` keeps the step, schedule, RNG and learner extras, and
``model/`` the ``save_pretrained`` policy, as in the replicated format.

Refused with ``run.parallel: fsdp``: LoRA, a critic (PPO), vLLM and rollout servers.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.distributed as dist

from rlvr.engines.hf import HFEngine
from rlvr.learners.checkpoint import _remove, _remove_abandoned, _write_atomically, list_checkpoints
from rlvr.learners.checkpoint import load_checkpoint as load_full_checkpoint
from rlvr.learners.checkpoint import rng_state, save_checkpoint, set_rng_state
from rlvr.learners.distributed import World

SHARDED_FORMAT = "dcp"


def check_parallel(cfg, algo) -> None:
    """Settings ``run.parallel: fsdp`` cannot honour, refused by name before anything loads."""
    if cfg.run.parallel != "fsdp":
        return
    why = {"model.lora_rank > 0": cfg.model.lora_rank > 0,
           f"{algo.name if hasattr(algo, 'name') else cfg.algorithm}'s critic": algo.needs_critic,
           "rollout.engine = vllm": cfg.rollout.engine == "vllm",
           "rollout.servers": bool(cfg.rollout.servers)}
    bad = [k for k, v in why.items() if v]
    if bad:
        raise ValueError(f"run.parallel = fsdp does not support {', '.join(bad)} yet; use "
                         "run.parallel = replicate")


def decoder_layers(model) -> list[torch.nn.Module]:
    """The modules FSDP2 wraps one by one: those of the classes in ``model._no_split_modules``."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"run.parallel = fsdp: {type(model).__name__} names no decoder layer class "
                         "(_no_split_modules); it cannot be sharded layer by layer")
    return layers


def shard(model, world: World, device: str):
    """``fully_shard`` each decoder layer, then the model; gradients summed over ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(torch.device(device).type, (world.size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # sums: the loss holds the global normaliser
            m.set_force_sum_reduction_for_comms(True)
    return model


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_session_models(world: World, model, ref_model, tokenizer, device: str, max_batch_size):
    """Shard the policy and the reference; returns them and the rollout engine over a plain copy."""

    rollout_copy = copy.deepcopy(model).eval().requires_grad_(False)
    model = shard(model, world, device)
    if isinstance(ref_model, torch.nn.Module):
        ref_model = shard(ref_model, world, device)
    return model, ref_model, FullWeightsEngine(HFEngine(rollout_copy, tokenizer, device=device,
                                                        max_batch_size=max_batch_size))


def full_state_dict(model, *, rank0_only: bool = False) -> dict:
    """The whole model's weights gathered from the shards (a collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=rank0_only))


class FullWeightsEngine:
    """The HF engine generating with a plain, unsharded copy of the policy; ``load_weights`` of
    the sharded policy gathers its full weights into the copy (every rank calls it)."""

    def __init__(self, engine) -> None:
        self.engine = engine

    @property
    def full_model(self):
        return self.engine.model

    def load_weights(self, model_or_state_dict) -> None:
        sd = full_state_dict(model_or_state_dict) if is_sharded(model_or_state_dict) else model_or_state_dict
        if isinstance(sd, torch.nn.Module):
            sd = sd.state_dict()
        self.engine.model.load_state_dict(sd)

    def __getattr__(self, name):  # generate, session, close, ...
        return getattr(self.engine, name)


def save_sharded_checkpoint(run_dir: str | Path, step: int, *, world: World, model, optimizer,
                            scheduler, tokenizer, full_model, extra: dict,
                            keep_checkpoints: int = 0) -> Path:
    """Every rank writes its shards of the model and optimizer with ``dcp.save`` into a staging
    directory; rank 0 then writes ``state.pt`` and ``model/`` (from ``full_model``, the engine's
    gathered copy) and renames the whole into ``checkpoints/step_<step>`` atomically
    (:func:`rlvr.learners.checkpoint._write_atomically`), then prunes to ``keep_checkpoints``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    pid = [os.getpid()]
    dist.broadcast_object_list(pid, src=0)  # one staging name for all ranks: rank 0's process
    staged = root / f".tmp-{final.name}-dcp-{pid[0]}"
    if world.main:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root)
    world.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(staged))
    world.barrier()
    if world.main:
        def write(into: Path) -> None:
            os.replace(staged, into / SHARDED_FORMAT)
            torch.save({"step": step, "format": SHARDED_FORMAT, "world_size": world.size,
                        "model": None, "optimizer": None, "scheduler": scheduler.state_dict(),
                        "rng": rng_state(), "extra": extra or {}}, into / "state.pt")
            full_model.save_pretrained(into / "model")
            if tokenizer is not None:
                tokenizer.save_pretrained(into / "model")

        try:
            _write_atomically(write, root / f".tmp-{final.name}-{os.getpid()}", final,
                              what=f"checkpoint {final}")
        finally:
            if staged.exists():
                _remove(staged)
        if keep_checkpoints:
            older = [p for p in list_checkpoints(run_dir) if p != final]
            for old in older[:max(0, len(older) - (keep_checkpoints - 1))]:
                _remove(old)
    world.barrier()
    return final


def save_session_checkpoint(s, step: int) -> None:
    """The on-policy loop's checkpoint: rank 0 writes the whole state (replicated), or every rank
    its shards (fsdp)."""

    keep = s.cfg.run.keep_checkpoints
    if s.world.sharded:
        save_sharded_checkpoint(s.out_dir, step, world=s.world, model=s.model, optimizer=s.optimizer,
                                scheduler=s.scheduler, tokenizer=s.tokenizer,
                                full_model=s.engine.full_model, extra=s.extra, keep_checkpoints=keep)
    elif s.world.main:
        save_checkpoint(s.out_dir, step, model=s.model, optimizer=s.optimizer, scheduler=s.scheduler,
                        tokenizer=s.tokenizer, extra=s.extra, keep_checkpoints=keep)


def load_checkpoint(path: str | Path, *, model, optimizer=None, scheduler=None,
                    restore_rng: bool = True) -> dict:
    """Restore a checkpoint of either format into a plain or a sharded model: a DCP checkpoint
    (written by N ranks) is resharded to this world, one process included; a replicated
    checkpoint (``state.pt`` with the whole model) goes through
    :func:`rlvr.learners.checkpoint.load_checkpoint` into a plain model, and is sharded on load into an
    FSDP2 one."""
    path = Path(path)
    state_file = path / "state.pt" if path.is_dir() else path
    if not state_file.exists():
        raise FileNotFoundError(f"no checkpoint state at {state_file}")
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    if state.get("format") != SHARDED_FORMAT and not is_sharded(model):
        return load_full_checkpoint(state_file, model=model, optimizer=optimizer,
                                    scheduler=scheduler, restore_rng=restore_rng)
    if state.get("format") != SHARDED_FORMAT:  # a replicated checkpoint, resharded here
        _load_full_into_sharded(state, model, optimizer)
    else:
        _load_dcp(state_file.parent / SHARDED_FORMAT, model, optimizer)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"step": int(state["step"]), "extra": state.get("extra", {})}


def _load_dcp(path: Path, model, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer) if optimizer is not None else (
        get_state_dict(model, [])[0], None)
    target = {"model": model_sd} if optim_sd is None else {"model": model_sd, "optimizer": optim_sd}
    dcp.load(target, checkpoint_id=str(path))
    set_state_dict(model, optimizer if optimizer is not None else [],
                   model_state_dict=target["model"], optim_state_dict=target.get("optimizer", {}))


def _load_full_into_sharded(state: dict, model, optimizer) -> None:
    """A replicated checkpoint (whole tensors, the optimizer's state keyed by parameter index)
    into sharded modules: every rank reads the file and keeps its shards. The optimizer's index
    ``i`` is the ``i``-th trainable parameter, the order :func:`rlvr.learners.common.setup`
    builds it in."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=full)
    saved = state.get("optimizer")
    if optimizer is None or saved is None:
        return
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    n_saved = sum(len(g["params"]) for g in saved["param_groups"])
    if n_saved != len(names):
        raise ValueError(f"the checkpoint's optimizer holds {n_saved} parameters, the sharded "
                         f"model trains {len(names)}; it was written for another model")
    by_name = {"state": {names[i]: v for i, v in saved["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                                for g in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=full)
