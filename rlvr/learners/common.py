"""The plumbing of the on-policy loop (:mod:`rlvr.learners.onpolicy`).

The math lives in :mod:`rlvr.algorithms.advantages` and :mod:`rlvr.algorithms.losses`, each algorithm's choice of it in
:mod:`rlvr.algorithms`; this module builds the policy, reference model, optimizer and schedule,
streams prompts, collects rollouts, decides the training mask (in one place), runs the
mini-batch / micro-batch policy update with its single normalisation, and evaluates, logs and
checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rlvr.algorithms.losses import adaptive_kl_coef, aggregate, kl_estimator, kl_k3
from rlvr.core.config import TrainConfig
from rlvr.core.models import load_policy, pick_device
from rlvr.core.registry import ENVIRONMENTS
from rlvr.core.types import Task, Trajectory
from rlvr.data.tasks import load_tasks, prompt_char_budget
from rlvr.engines.factory import make_engine
from rlvr.engines.hf import HFEngine
from rlvr.learners.batch import Batch, collate, token_logprobs
from rlvr.learners.checkpoint import latest_checkpoint
from rlvr.learners.distributed import NullLogger, World, init_world
from rlvr.learners.metrics import MetricsLogger, environment_metrics, plot_metrics, rollout_metrics
from rlvr.learners.runtime import (LOW_PRECISION, GuardedStep, activation_checkpointing,
                                   lr_schedule, master_weights_fp32, run_dir, seed_everything)
from rlvr.learners.sharding import load_checkpoint, save_session_checkpoint, shard_session_models
from rlvr.rewards.spec import add_model_rewards, env_config, reward_spec
from rlvr.rollout.episodes import collect, make_env_factory

log = logging.getLogger(__name__)


class PromptStream:
    """Prompts in epochs, reshuffled each epoch with a seed; ``position`` is the checkpointed state."""

    def __init__(self, tasks: list[Task], seed: int, shuffle: bool = True, position: int = 0) -> None:
        if not tasks:
            raise ValueError("no training tasks (check data.train and data.limit)")
        self.tasks, self.seed, self.shuffle, self.position = tasks, seed, shuffle, position

    def _order(self, epoch: int) -> list[int]:
        idx = list(range(len(self.tasks)))
        if self.shuffle:
            random.Random(self.seed * 7919 + epoch).shuffle(idx)
        return idx

    def next(self, n: int) -> list[Task]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.tasks))
            out.append(self.tasks[self._order(epoch)[i]])
            self.position += 1
        return out


@dataclass
class Session:
    """Everything a learner's loop touches."""

    cfg: TrainConfig
    model: Any
    tokenizer: Any
    ref_model: Any  # a frozen copy, the string "adapter-disabled" (LoRA), or None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    engine: Any
    env_factory: Callable
    prompts: PromptStream
    eval_tasks: list[Task] | None
    logger: MetricsLogger
    out_dir: Path
    device: str
    start_step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # learner state saved in checkpoints
    own_logger: bool = True
    extra_runtime: dict[str, Any] = field(default_factory=dict)  # not checkpointed (the step guard)
    world: World = field(default_factory=World)  # data-parallel ranks under torchrun

    def compute(self):
        """The context of every forward pass: autocast to ``model.dtype`` (mixed precision over
        fp32 master weights), or nothing in float32."""
        dtype = LOW_PRECISION.get(self.cfg.model.dtype)
        if dtype is None:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)


def total_optimizer_steps(cfg: TrainConfig) -> int:
    return cfg.run.steps * cfg.rl.epochs_per_batch * cfg.rl.mini_batches_per_epoch


def _apply_lora(model, rank: int):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("model.lora_rank > 0 needs peft: pip install 'rlvr[lora]'") from None
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))


def setup(cfg: TrainConfig, model=None, tokenizer=None, tasks=None, logger=None, *,
          needs_ref: bool = False, extra_params: list | None = None) -> Session:
    """Build (or take) the policy, reference, optimizer, schedule, engine, prompts and logger;
    restore the newest checkpoint when ``run.resume``."""
    env_cfg = env_config(cfg)  # the reward's verifiers; a bad name or path fails before loading
    env_factory = make_env_factory(env_cfg)  # settings checked before any model loads
    seed_everything(cfg.run.seed)
    world, device = init_world(pick_device(cfg.run.device))
    if model is None or tokenizer is None:
        model, tokenizer = load_policy(cfg.model, device)
    model.to(device)
    master_weights_fp32(model, cfg.model.dtype)
    activation_checkpointing(model, cfg.model.gradient_checkpointing)
    world.broadcast_module_(model)  # every rank starts from rank 0's weights
    if cfg.model.lora_rank > 0 and not hasattr(model, "disable_adapter"):
        model = _apply_lora(model, cfg.model.lora_rank)
    ref_model = None
    if needs_ref:  # LoRA: the adapter-disabled base is the reference, no copy kept
        if hasattr(model, "disable_adapter"):
            ref_model = "adapter-disabled"
        else:
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    engine = None
    if world.active and cfg.run.parallel == "fsdp":  # FSDP2; the engine generates with a full copy
        model, ref_model, engine = shard_session_models(world, model, ref_model, tokenizer, device,
                                                        cfg.rollout.max_batch_size or None)
        world = dataclasses.replace(world, sharded=True)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = lr_schedule(optimizer, cfg.optim, total_optimizer_steps(cfg))
    # rows no verifier of this run can reward are refused at load (unless reward models score)
    verifiers = env_cfg.verifiers or getattr(ENVIRONMENTS.get(env_cfg.name), "verifiers", {})
    why = "the reward comes from reward models" if reward_spec(cfg).models else ""
    size = dict(max_prompt_chars=prompt_char_budget(cfg.rollout.max_total_tokens),
                too_long=cfg.data.too_long)  # a megabyte prompt is refused (or skipped) at load
    tasks = tasks if tasks is not None else load_tasks(cfg.data.train, cfg.data.limit, cfg.run.seed,
                                                       verifiers=verifiers, answers_optional=why, **size)
    eval_tasks = (load_tasks(cfg.data.eval, cfg.data.limit, cfg.run.seed + 1, verifiers=verifiers,
                             answers_optional=why, **size) if cfg.data.eval else None)
    out_dir = run_dir(cfg) if world.main else Path(cfg.run.output_dir)
    world.barrier()
    separate_weights = bool(cfg.rollout.servers) or cfg.rollout.engine == "vllm"
    if separate_weights:  # an engine with its own copy of the weights
        engine = make_engine(cfg.rollout.engine, model, tokenizer,
                             model_path=_engine_start_dir(cfg, model, tokenizer, out_dir, world),
                             rollout=cfg.rollout, weights_dir=str(out_dir / "engine_weights"))
    elif engine is None:
        engine = HFEngine(model, tokenizer, device=device,  # shares the training model
                          max_batch_size=cfg.rollout.max_batch_size or None)
    s = Session(cfg, model, tokenizer, ref_model, optimizer, scheduler, engine,
                env_factory, PromptStream(tasks, cfg.run.seed, cfg.data.shuffle),
                eval_tasks, logger, out_dir, device, own_logger=logger is None, world=world)
    ckpt = latest_checkpoint(out_dir) if cfg.run.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        s.start_step, s.extra = state["step"], state["extra"]
        s.prompts.position = s.extra.get("data_position", 0)
        log.info("resumed from %s (step %d)", ckpt, s.start_step)
    if (separate_weights or world.sharded) and (world.main or not cfg.rollout.servers):
        engine.load_weights(model)  # vLLM, the servers, fsdp's copy: the (resumed) weights
    world.barrier()
    if s.logger is None and not world.main:
        s.logger = NullLogger()  # rank 0 writes the metrics
    if s.logger is None:
        s.logger = MetricsLogger(out_dir, total_steps=cfg.run.steps, progress=cfg.run.progress,
                                 tensorboard=cfg.run.log_tensorboard,
                                 resume_step=s.start_step if cfg.run.resume else None,
                                 wandb_project=cfg.run.wandb_project, wandb_config=cfg)
    return s


def _engine_start_dir(cfg: TrainConfig, model, tokenizer, out_dir: Path, world) -> str:
    """A directory vLLM can start from: the policy's own, else the trainer's model saved once under
    the run (``tiny``, a hub id, a .gguf file); rollout servers start from their own ``--model``."""
    if Path(cfg.model.name_or_path).is_dir() or cfg.rollout.servers:
        return str(cfg.model.name_or_path)
    path = out_dir / "engine_init"
    if world.main and not (path / "config.json").exists():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    world.barrier()
    return str(path)


def rollout(s: Session, step: int, attempt: int = 0) -> tuple[list[Trajectory], dict[str, float]]:
    """Collect one rollout batch (``prompts_per_step`` × ``samples_per_prompt``), then add
    reward-model rewards. Returns the trajectories and phase timings. ``attempt`` > 0 is a
    dynamic-sampling re-draw within the step (its own sampling seed)."""
    cfg = s.cfg
    t0 = time.perf_counter()
    tasks = s.world.block(s.prompts.next(cfg.rl.prompts_per_step))  # this rank's prompts
    with s.compute():
        trajs = collect(s.engine, s.tokenizer, s.env_factory, tasks,
                        samples_per_prompt=cfg.rollout.samples_per_prompt, cfg=cfg.rollout,
                        seed=cfg.run.seed * 100_003 + step + attempt * 1_000_000_007
                        + s.world.rank * 7_919)
    t1 = time.perf_counter()
    dec = s.tokenizer.decode
    add_model_rewards(trajs, [dec(t.token_ids[:t.prompt_len]) for t in trajs],
                      [dec(t.completion_ids) for t in trajs], cfg)
    t2 = time.perf_counter()
    sampled = sum(t.num_sampled for t in trajs)
    return trajs, {"time/rollout": t1 - t0, "time/reward": t2 - t1,
                   "time/rollout_tokens_per_s": sampled / max(t1 - t0, 1e-9)}


def train_mask(batch: Batch, mask_observations: bool) -> torch.Tensor:
    """THE training mask (B, T). Default: the trajectories' ``loss_mask`` (sampled tokens only).
    ``rl.mask_observations = False`` (the ``--no-mask`` ablation): every non-prompt, non-padding
    token, observations included."""
    if mask_observations:
        return batch.loss_mask
    pos = torch.arange(batch.input_ids.shape[1])[None, :]  # (1, T)
    return ((pos >= batch.prompt_lens[:, None]) & (batch.attention_mask > 0)).float()


def policy_temperature(cfg: TrainConfig) -> float:
    return cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0


@torch.no_grad()
def forward_logprobs(s: Session, batch: Batch, *, reference: bool = False) -> torch.Tensor:
    """(B, T) logprobs of the batch's ``loss_mask`` tokens under the policy (or the reference), 0
    elsewhere; no grad, micro-batched."""
    model = s.model if (not reference or s.ref_model == "adapter-disabled") else s.ref_model
    ctx = s.model.disable_adapter() if reference and s.ref_model == "adapter-disabled" else nullcontext()
    was = model.training
    model.eval()
    out = torch.zeros(batch.input_ids.shape)
    size, buckets = s.cfg.optim.micro_batch_size, s.cfg.optim.length_buckets
    order = batch.length_order() if buckets else torch.arange(len(batch))
    with ctx, s.compute():
        for idx, mb in zip(order.split(size), batch.split(size, by_length=buckets)):
            mb = mb.to(s.device)
            lp, _ = token_logprobs(model, mb, policy_temperature(s.cfg), with_entropy=False,
                                   only=mb.loss_mask, share_prompts=s.cfg.rl.share_prompts)
            out[idx, :lp.shape[1]] = lp.float().cpu()
    model.train(was)
    return out


def prepare_batch(s: Session, trajs: list[Trajectory], advantages: torch.Tensor | None = None) -> Batch:
    """Collate, apply the training mask, fill missing behaviour logprobs, add reference logprobs.

    ``advantages``: (B,) per trajectory (broadcast over the training mask) or (B, T) per token.
    Observation tokens have no behaviour logprob (the engine never sampled them); under
    ``--no-mask`` their old logprobs come from a no-grad forward pass of the current policy,
    before any update, so the PPO ratio starts at 1 on them.
    """
    if any(len(t) == 0 for t in trajs):
        # An episode whose reset failed has no tokens; a one-pad-token stand-in with nothing to
        # train keeps rows aligned with rewards and advantages (and attention well defined).
        pad = s.tokenizer.pad_token_id
        trajs = [t if len(t) else Trajectory([pad], [0], [0.0], 1, group_id=t.group_id,
                                             task_id=t.task_id, reward=t.reward, error=t.error)
                 for t in trajs]
    batch = collate(trajs, s.tokenizer.pad_token_id)
    sampled = batch.sampled_mask = batch.loss_mask
    batch.loss_mask = train_mask(batch, s.cfg.rl.mask_observations)
    if not s.cfg.rl.mask_observations:
        recomputed = forward_logprobs(s, batch)
        batch.logprobs = torch.where(sampled > 0, batch.logprobs, recomputed) * batch.loss_mask
    batch.old_logprobs = batch.logprobs  # rl.old_logprobs = recompute replaces it in the loop
    if advantages is not None:
        adv = advantages.float()
        batch.advantages = (adv[:, None] if adv.dim() == 1 else adv) * batch.loss_mask
    if s.ref_model is not None:
        batch.ref_logprobs = forward_logprobs(s, batch, reference=True) * batch.loss_mask
    return batch


def loss_max_len(cfg: TrainConfig) -> int:
    return cfg.rl.loss_max_len or cfg.rollout.max_new_tokens * cfg.rollout.max_turns


def mini_batches(batch: Batch, n: int, seed: int) -> list[Batch]:
    """Shuffle rows (seeded) and split into ``n`` near-equal mini-batches."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(batch), generator=g)
    return [batch.select(idx) for idx in torch.tensor_split(perm, min(n, len(batch))) if len(idx)]


def policy_loss_terms(s: Session, mb: Batch, algo, *, kl_coef: float
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss (B, T) of the policy on one micro-batch, and per-token diagnostics: the
    algorithm's policy loss, times the train/inference importance weights when set, plus the
    β-weighted KL term (unless the KL is in the reward) and the entropy bonus."""
    cfg = s.cfg
    with s.compute():
        lp, ent = token_logprobs(s.model, mb, policy_temperature(cfg), with_entropy=True,
                                 entropy_grad=bool(cfg.rl.entropy_coef),  # else a diagnostic only
                                 only=mb.loss_mask, share_prompts=cfg.rl.share_prompts)
    per_token, was_clipped = algo.policy_loss(lp, mb, cfg.rl)
    if mb.is_weights is not None:
        per_token = per_token * mb.is_weights
    diag = {"approx_kl": kl_k3(lp.detach(), mb.old_logprobs), "clip_frac": was_clipped.float(),
            "entropy": ent.detach(), "logprob_now": lp.detach()}
    if mb.ref_logprobs is not None:
        kl = kl_estimator(cfg.rl.kl_estimator)(lp, mb.ref_logprobs)
        diag["kl"] = kl.detach()
        if kl_coef > 0 and not cfg.rl.kl_in_reward:  # GRPO-style β-weighted KL loss term
            per_token = per_token + kl_coef * kl
    if cfg.rl.entropy_coef:
        per_token = per_token - cfg.rl.entropy_coef * ent
    return per_token, diag


def accumulate_gradients(s: Session, mini: Batch, algo, *, kl_coef: float,
                         extra_loss: Callable | None = None) -> tuple[float, dict[str, float], float]:
    """Backward the loss of one mini-batch, micro-batch by micro-batch (gradients accumulate).

    Normalisation happens here, once: the mini-batch's sequence and token counts go to
    :func:`rlvr.algorithms.losses.aggregate` for every micro-batch, so the accumulated gradient equals the
    gradient of the whole mini-batch's loss whatever ``optim.micro_batch_size`` is, and whether
    ``optim.length_buckets`` groups rows of similar length into the same micro-batch.
    ``extra_loss(mb, norm)`` adds a scalar loss on the same micro-batch (PPO's shared value head).
    Returns (loss, masked sums of the diagnostics, trained tokens); ``logprob_gap`` sums
    |trainer - engine| logprob over the trained tokens the engine sampled.
    """
    cfg = s.cfg
    norm = global_norm(s, mini)
    total, sums, tokens = 0.0, {}, 0.0
    for mb in mini.split(cfg.optim.micro_batch_size, by_length=cfg.optim.length_buckets):
        mb = mb.to(s.device)
        per_token, diag = policy_loss_terms(s, mb, algo, kl_coef=kl_coef)
        loss = aggregate(per_token, mb.loss_mask, cfg.rl.loss_agg, **norm)
        if extra_loss is not None:
            loss = loss + extra_loss(mb, norm)
        loss.backward()
        total += loss.item()
        m = mb.loss_mask
        tokens += m.sum().item()
        now = diag.pop("logprob_now")
        for k, v in diag.items():
            sums[k] = sums.get(k, 0.0) + (v * m).sum().item()
        sampled = mb.sampled_mask if mb.sampled_mask is not None else m
        sums["logprob_gap"] = sums.get("logprob_gap", 0.0) + ((now - mb.logprobs).abs() * sampled).sum().item()
        sums["sampled_tokens"] = sums.get("sampled_tokens", 0.0) + sampled.sum().item()
    return total, sums, tokens


def global_norm(s: Session, mini: Batch) -> dict:
    """The normalisers of one mini-batch, over every rank's share of it."""
    return dict(num_seqs=s.world.sum_float(len(mini)), num_tokens=s.world.sum_float(mini.num_tokens),
                max_len=loss_max_len(s.cfg))


def update_policy(s: Session, batch: Batch, algo, *, kl_coef: float = 0.0, step: int = 0,
                  extra_loss: Callable | None = None) -> dict[str, float]:
    """``rl.epochs_per_batch`` × ``rl.mini_batches_per_epoch`` optimizer steps on one rollout batch
    (see :func:`accumulate_gradients` for the micro-batching), with gradient clipping and the
    schedule. A non-finite gradient skips its optimizer step, before the weights are touched.

    ``train/logprob_gap`` is measured on the first mini-batch, whose forward pass sees the weights
    the batch was sampled with: mean |trainer - engine| logprob per sampled token."""
    cfg = s.cfg
    sums: dict[str, float] = {}
    tokens, losses, grad_norms, opt_steps, gap = 0.0, [], [], 0, None
    s.model.train()
    guard = s.extra_runtime.setdefault("guard", GuardedStep(s.optimizer, s.scheduler, cfg.optim.max_grad_norm))
    for epoch in range(cfg.rl.epochs_per_batch):
        for mini in mini_batches(batch, cfg.rl.mini_batches_per_epoch,
                                 seed=cfg.run.seed * 1_000_003 + step * 101 + epoch):
            s.optimizer.zero_grad(set_to_none=True)
            loss, part, n = accumulate_gradients(s, mini, algo, kl_coef=kl_coef, extra_loss=extra_loss)
            s.world.sum_grads_(guard_params(s))  # the ranks' shares of one mini-batch gradient
            loss = s.world.sum_float(loss)
            n = s.world.sum_float(n)
            part = {k: s.world.sum_float(v) for k, v in sorted(part.items())}
            g_sum, g_n = part.pop("logprob_gap"), part.pop("sampled_tokens")
            if gap is None:
                gap = g_sum / max(g_n, 1.0)
            gn = guard(loss, step)  # a non-finite step is dropped before it touches the weights
            if gn is None:
                continue
            opt_steps += 1
            losses.append(loss)
            grad_norms.append(float(gn))
            tokens += n
            for k, v in part.items():
                sums[k] = sums.get(k, 0.0) + v
    out = {f"train/{k}": v / max(tokens, 1.0) for k, v in sums.items()}
    out.update({"train/loss": float(np.mean(losses)) if losses else 0.0,
                "train/grad_norm": float(np.mean(grad_norms)) if grad_norms else 0.0,
                "train/optimizer_steps": opt_steps, "train/lr": s.scheduler.get_last_lr()[0],
                "train/tokens": tokens / max(cfg.rl.epochs_per_batch, 1),
                "train/logprob_gap": gap or 0.0})
    return out


def guard_params(s: Session) -> list:
    return [p for g in s.optimizer.param_groups for p in g["params"]]


def _call_eval(eval_fn: Callable, s: Session, step: int) -> dict:
    params = inspect.signature(eval_fn).parameters
    model = getattr(s.engine, "full_model", s.model)  # fsdp: rank 0 alone runs the full copy
    if len(params) >= 3 or "step" in params:
        return eval_fn(model, s.tokenizer, step) or {}
    return eval_fn(model, s.tokenizer) or {}


def evaluate(s: Session, step: int, eval_fn: Callable | None) -> dict[str, float]:
    """The caller's held-out evaluation, or greedy rollouts on ``data.eval``; keys get ``eval/``."""
    if eval_fn is not None:
        res = _call_eval(eval_fn, s, step)
    elif s.eval_tasks:
        with s.compute():
            trajs = collect(s.engine, s.tokenizer, s.env_factory, s.eval_tasks, samples_per_prompt=1,
                            cfg=s.cfg.rollout, greedy=True)
        res = {k.split("/")[-1]: v for k, v in rollout_metrics(trajs, 1).items()
               if k in ("reward/mean", "reward/accuracy", "rollout/response_len", "rollout/tool_calls")}
    else:
        return {}
    return {(k if k.startswith("eval/") else f"eval/{k}"): v for k, v in res.items()
            if isinstance(v, (int, float))}


def log_and_checkpoint(s: Session, step: int, metrics: dict, eval_fn: Callable | None) -> None:
    """Log one step (with evaluation when due) and save a checkpoint when due."""
    cfg = s.cfg
    last = step == cfg.run.steps
    due = (cfg.run.eval_every and step % cfg.run.eval_every == 0) or (last and (eval_fn or s.eval_tasks))
    if due and s.world.main:  # rank 0 evaluates; the others go on to the next step's rollout
        t0 = time.perf_counter()
        metrics.update(evaluate(s, step, eval_fn))
        metrics["time/eval"] = time.perf_counter() - t0
    s.logger.log(step, metrics)
    s.extra["data_position"] = s.prompts.position
    if last or (cfg.run.save_every and step % cfg.run.save_every == 0):
        save_session_checkpoint(s, step)  # rank 0 alone, or every rank's shards (fsdp)


def finish(s: Session, history: list[dict]) -> dict:
    """Close the logger, write ``report.json`` and plots; return the final metrics."""
    final = history[-1] if history else {}
    s.world.barrier()  # rank 0's last checkpoint is complete before any rank returns
    if not s.world.main:
        return {"algorithm": s.cfg.algorithm, "steps": s.cfg.run.steps, "final": final,
                "eval": {}}
    report = {"algorithm": s.cfg.algorithm, "steps": s.cfg.run.steps, "final": final,
              "eval": {k: v for k, v in final.items() if k.startswith("eval/")}}
    (s.out_dir / "report.json").write_text(json.dumps(report, indent=2))
    if s.own_logger:
        s.logger.close()
    try:
        plot_metrics(s.logger.path, s.out_dir / "metrics.png")
    except Exception as e:  # a plot must never fail a finished run
        log.warning("plotting failed: %s", e)
    return report


def kl_coef(s: Session) -> float:
    """The current β: ``rl.kl_coef``, or its adapted value (checkpointed in ``extra``)."""
    return float(s.extra.get("kl_coef", s.cfg.rl.kl_coef))


def adapt_kl_coef(s: Session, observed_kl: float, n_samples: int) -> float:
    """Adaptive KL control when ``rl.kl_target`` is set; a fixed β otherwise."""
    beta = kl_coef(s)
    if s.cfg.rl.kl_target and beta > 0:
        beta = adaptive_kl_coef(beta, observed_kl, s.cfg.rl.kl_target, s.cfg.rl.kl_horizon, n_samples)
        s.extra["kl_coef"] = beta
    return beta


def step_metrics(trajs: list[Trajectory], cfg: TrainConfig, times: dict, t_step: float) -> dict:
    """Rollout statistics, the environment's own batch metrics (``env/...``) and phase timings."""
    out = rollout_metrics(trajs, cfg.rollout.samples_per_prompt)
    out.update(environment_metrics(ENVIRONMENTS.get(cfg.env.name), trajs))
    out.update(times)
    out["time/step"] = time.perf_counter() - t_step
    return out
