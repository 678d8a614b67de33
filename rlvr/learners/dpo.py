"""Direct preference optimisation and its variants, chosen by ``pref.loss``:

- ``sigmoid``: DPO (Rafailov et al. 2023), against a frozen reference;
- ``cdpo``: conservative DPO, labels flipped with probability ``pref.label_smoothing``;
- ``ipo``: IPO (Azar et al. 2023), τ = ``pref.beta``;
- ``simpo``: SimPO (Meng et al. 2024), reference-free, length-normalised, margin ``pref.simpo_gamma``.

Loop: pairs → reference logprobs (once, then the reference is freed, unless
``pref.precompute_ref_logprobs`` is false) → (batch → micro-batches: policy logprobs of chosen
and rejected → loss → backward) → clip → step → log; held-out implicit-reward margin and accuracy
before and after; ``final/`` saved.

Deviations: IPO uses summed (not length-averaged) log-ratios, as in the paper (TRL averages); the
reference defaults to the initial policy (set ``pref.reference_model`` to use an SFT model).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable, NamedTuple, Sequence

import torch

import rlvr
from rlvr.algorithms.pref_losses import PrefLoss, cdpo_loss, dpo_sigmoid_loss, ipo_loss, simpo_loss
from rlvr.core.config import ModelConfig
from rlvr.core.models import load_policy
from rlvr.data.preferences import PrefExample, load_preference_data
from rlvr.learners import offline_common as oc
from rlvr.learners.distributed import World
from rlvr.learners.runtime import GuardedStep

log = logging.getLogger(__name__)


class PairLogps(NamedTuple):
    """Per-pair sequence quantities, each ``(P,)``."""

    chosen: torch.Tensor  # Σ log π(chosen tokens)
    rejected: torch.Tensor
    chosen_len: torch.Tensor  # number of chosen response tokens
    rejected_len: torch.Tensor


#: pref.loss → f(policy PairLogps, reference PairLogps or None, pref config) → PrefLoss
LOSSES: dict[str, Callable[[PairLogps, PairLogps | None, Any], PrefLoss]] = {
    "sigmoid": lambda p, r, c: dpo_sigmoid_loss(p.chosen, p.rejected, r.chosen, r.rejected, c.beta),
    "cdpo": lambda p, r, c: cdpo_loss(p.chosen, p.rejected, r.chosen, r.rejected, c.beta, c.label_smoothing),
    "ipo": lambda p, r, c: ipo_loss(p.chosen, p.rejected, r.chosen, r.rejected, c.beta),
    "simpo": lambda p, r, c: simpo_loss(p.chosen, p.rejected, p.chosen_len, p.rejected_len, c.beta,
                                        c.simpo_gamma),
}
REFERENCE_FREE = {"simpo"}


def check_pref_config(pref) -> None:
    if pref.loss not in LOSSES:
        raise ValueError(f"pref.loss {pref.loss!r} is unknown; known: {', '.join(sorted(LOSSES))}")
    if pref.label_smoothing and pref.loss != "cdpo":
        raise ValueError(f"pref.label_smoothing = {pref.label_smoothing} only applies to pref.loss = cdpo "
                         f"(conservative DPO), not {pref.loss!r}")
    if pref.beta <= 0:
        raise ValueError(f"pref.beta must be > 0, got {pref.beta}")


def pair_logps(model, pairs: Sequence[PrefExample], pad_id: int) -> PairLogps:
    """Policy (or reference) log-probabilities of both responses of each pair; one forward over
    the ``2P`` sequences. Gradients flow when called with grad enabled."""
    dev = next(model.parameters()).device
    seqs = [p.chosen_seq() for p in pairs] + [p.rejected_seq() for p in pairs]
    logps, lens = oc.sequence_logps(model, seqs, pad_id, dev)  # (2P,), (2P,)
    P = len(pairs)
    return PairLogps(logps[:P], logps[P:], lens[:P], lens[P:])


@torch.no_grad()
def precompute(model, pairs: Sequence[PrefExample], pad_id: int, micro_batch_size: int,
               world: World = World()) -> PairLogps:
    """Reference log-probabilities of every pair, computed once (CPU tensors). Under ``torchrun``
    each rank scores its share of the pairs and every rank gets all of them, in order."""
    was_training = model.training
    model.eval()
    mine = world.share(list(range(len(pairs))))
    parts = [pair_logps(model, [pairs[i] for i in chunk], pad_id)
             for chunk in oc.micro_chunks(mine, micro_batch_size)]
    model.train(was_training)
    local = [torch.cat([getattr(p, f) for p in parts]).cpu() if parts else torch.zeros(0)
             for f in PairLogps._fields]
    sizes = world.row_counts(len(mine))
    return PairLogps(*(world.gather_rows(x, sizes) for x in local))


def _take(ref: PairLogps | None, idx: list[int], device) -> PairLogps | None:
    if ref is None:
        return None
    t = torch.tensor(idx, dtype=torch.long)
    return PairLogps(*(x[t].to(device) for x in ref))


def evaluate(model, pairs: Sequence[PrefExample], ref: PairLogps | None, pref, pad_id: int,
             micro_batch_size: int) -> dict[str, float]:
    """Held-out implicit-reward margin and accuracy, plus the policy's raw log-prob margin."""
    pol = precompute(model, pairs, pad_id, micro_batch_size)
    out = LOSSES[pref.loss](pol, ref, pref)
    margins = out.chosen_rewards - out.rejected_rewards
    return {"loss": float(out.losses.mean()), "margin": float(margins.mean()),
            "accuracy": float((margins > 0).float().mean()),
            "chosen_reward": float(out.chosen_rewards.mean()),
            "rejected_reward": float(out.rejected_rewards.mean()),
            "logp_margin": float((pol.chosen - pol.rejected).mean())}


def train_dpo(model, pairs: Sequence[PrefExample], ref: PairLogps | None, cfg, pad_id: int,
              logger=None, ref_model=None, world: World = World()) -> dict[str, Any]:
    """Optimise ``model`` in place on ``pairs``. ``ref`` holds precomputed reference logprobs
    (aligned with ``pairs``), or ``ref_model`` scores each batch when ``ref`` is None. Under
    ``torchrun`` each rank trains on its share of every batch (``world``)."""
    pref = cfg.pref
    dev = next(model.parameters()).device
    n, bs = len(pairs), max(1, pref.batch_size)
    opt, sched = oc.make_optimizer(model.parameters(), cfg.optim,
                                   oc.planned_steps(n, bs, pref.epochs, cfg.run.steps))
    guard = GuardedStep(opt, sched, cfg.optim.max_grad_norm, f"the {pref.loss} loss")
    model.train()
    history: list[dict[str, float]] = []
    for step, idx in enumerate(oc.batches(n, bs, epochs=pref.epochs, max_steps=cfg.run.steps,
                                          seed=cfg.run.seed), start=1):
        t0 = time.perf_counter()
        sums = dict.fromkeys(("loss", "chosen", "rejected", "correct", "logp_c", "logp_r"), 0.0)
        mine = world.share(idx)  # this rank's pairs; the normaliser is the whole batch's
        k = world.sum_float(len(mine))
        for chunk in oc.micro_chunks(mine, cfg.optim.micro_batch_size):
            batch = [pairs[i] for i in chunk]
            r = _take(ref, chunk, dev)
            if r is None and ref_model is not None:
                with torch.no_grad():
                    r = pair_logps(ref_model, batch, pad_id)
            pol = pair_logps(model, batch, pad_id)
            out = LOSSES[pref.loss](pol, r, pref)
            (out.losses.sum() / k).backward()  # mean over the optimizer batch, divided once
            sums["loss"] += float(out.losses.detach().sum())
            sums["chosen"] += float(out.chosen_rewards.sum())
            sums["rejected"] += float(out.rejected_rewards.sum())
            sums["correct"] += float((out.chosen_rewards > out.rejected_rewards).sum())
            sums["logp_c"] += float(pol.chosen.detach().sum())
            sums["logp_r"] += float(pol.rejected.detach().sum())
        sums = oc.sync_step(world, opt, sums)  # gradients and sums of every rank's pairs
        grad_norm = guard(sums["loss"] / k, step)  # None: skipped, the weights untouched
        m = {"train/loss": sums["loss"] / k, "pref/chosen_reward": sums["chosen"] / k,
             "pref/rejected_reward": sums["rejected"] / k,
             "pref/margin": (sums["chosen"] - sums["rejected"]) / k,
             "pref/accuracy": sums["correct"] / k, "pref/logp_chosen": sums["logp_c"] / k,
             "pref/logp_rejected": sums["logp_r"] / k}
        oc.record_step(logger, history, step, m, grad_norm=grad_norm, guard=guard, scheduler=sched,
                       t0=t0)
    model.eval()
    return oc.summary(history, margin_last="pref/margin")


@rlvr.algorithm("dpo")
def run(cfg, *, model=None, tokenizer=None, logger=None) -> dict[str, Any]:
    """DPO / cDPO / IPO / SimPO on preference pairs (``pref.loss``)."""

    check_pref_config(cfg.pref)
    world, device, out = oc.start(cfg, "dpo")
    if model is None or tokenizer is None:
        model, tokenizer = load_policy(cfg.model, device)
    oc.place(world, model, device, cfg)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pairs, held = oc.train_and_held_out(load_preference_data, cfg, tokenizer)

    ref_model = ref_train = ref_held = None
    if cfg.pref.loss not in REFERENCE_FREE:
        if cfg.pref.reference_model:
            ref_cfg = ModelConfig(name_or_path=cfg.pref.reference_model, dtype=cfg.model.dtype)
            ref_model, ref_tok = load_policy(ref_cfg, device)
            if ref_tok.get_vocab() != tokenizer.get_vocab():
                raise ValueError(f"pref.reference_model {cfg.pref.reference_model!r} has a different "
                                 f"tokenizer from model.name_or_path {cfg.model.name_or_path!r}")
        else:
            ref_model = copy.deepcopy(model)
        oc.place(world, ref_model, device)
        ref_model.eval().requires_grad_(False)
        ref_held = precompute(ref_model, held, pad, cfg.optim.micro_batch_size, world)
        if cfg.pref.precompute_ref_logprobs:
            ref_train = precompute(ref_model, pairs, pad, cfg.optim.micro_batch_size, world)
            ref_model = None  # freed: the reference is never run again

    before = evaluate(model, held, ref_held, cfg.pref, pad, cfg.optim.micro_batch_size) if world.main else None
    stats = oc.train_logged(
        lambda logger: train_dpo(model, pairs, ref_train, cfg, pad, logger, ref_model, world),
        logger, out, cfg, len(pairs), world)
    if not world.main:
        return oc.other_rank_report(world, "dpo", stats)
    after = evaluate(model, held, ref_held, cfg.pref, pad, cfg.optim.micro_batch_size)
    final = oc.save_pretrained(model, tokenizer, out / "final")
    report = {"algorithm": "dpo", "loss_type": cfg.pref.loss, "train_pairs": len(pairs),
              "eval_pairs": len(held), "model_dir": str(final),
              **{f"eval_{k}_before": v for k, v in before.items()},
              **{f"eval_{k}": v for k, v in after.items()},
              **{f"train_{k}": v for k, v in stats.items()}}
    report["eval"] = {"eval/margin_before": before["margin"], "eval/margin": after["margin"],
                          "eval/accuracy_before": before["accuracy"], "eval/accuracy": after["accuracy"]}  # what `rlvr train` prints
    oc.write_report(out, report)
    log.info("dpo (%s): held-out margin %.4f → %.4f, accuracy %.3f → %.3f", cfg.pref.loss,
             before["margin"], after["margin"], before["accuracy"], after["accuracy"])
    world.barrier()
    return report
