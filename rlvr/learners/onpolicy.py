"""The one on-policy loop. Every on-policy algorithm (``rlvr list``) runs here; an algorithm only
declares its advantage and policy-loss functions (:mod:`rlvr.algorithms`).

Each step, top to bottom:

1. collect ``rl.prompts_per_step`` × ``rollout.samples_per_prompt`` trajectories, grouped by
   ``group_id``; with ``rl.filter_zero_variance`` drop the groups whose rewards are all equal and,
   with ``rl.resample_max_attempts``, sample more prompts until the batch is full (DAPO);
2. rewards: each trajectory's reward, minus ``rl.no_eos_penalty`` when a budget cut it, plus
   DAPO's overlong shaping when ``rl.overlong_buffer_len`` is set;
3. π_old: the engine's behaviour logprobs, or the trainer's own (``rl.old_logprobs = recompute``),
   with train/inference importance weights when ``rl.is_correction`` is set; the KL to the
   reference goes into the reward here, once, when ``rl.kl_in_reward`` (``r - β Σ_t KL_t`` for
   sequence-level advantages, ``-β KL_t`` per token for token-level ones); otherwise it is a
   β-weighted loss term in the update;
4. advantages: the algorithm's function (with the critic's values when it has one);
5. update: ``rl.epochs_per_batch`` × ``rl.mini_batches_per_epoch`` optimizer steps of the
   algorithm's policy loss (plus the critic's), normalised once per mini-batch; adaptive β;
6. engine weight sync (the one call site; the in-process HF engine shares the model);
7. log (``metrics.jsonl``, with ``train/logprob_gap`` every step) and 8. checkpoint.

A step in which every episode failed stops the run with the first error: nothing trains silently.
"""

from __future__ import annotations

import logging
import time

import torch

from rlvr.algorithms.advantages import overlong_penalty, zero_variance_groups
from rlvr.algorithms.base import AdvantageInputs, OnPolicyAlgorithm, resolve_settings
from rlvr.algorithms.losses import kl_estimator, kl_penalized_rewards, mismatch_weights
from rlvr.core.models import load_policy, pick_device
from rlvr.core.registry import ALGORITHMS
from rlvr.core.types import Trajectory
from rlvr.engines.base import SamplingParams
from rlvr.learners import common
from rlvr.learners.batch import Batch, collate, token_logprobs
from rlvr.learners.critic import Critic, ValueModel
from rlvr.learners.sharding import check_parallel
from rlvr.rollout import errors as run_errors
from rlvr.rollout import log as rollout_log
from rlvr.rollout.episodes import render_prompt

log = logging.getLogger(__name__)


def train(cfg, *, algorithm: OnPolicyAlgorithm | None = None, model=None, tokenizer=None, tasks=None,
          eval_fn=None, logger=None) -> dict:
    """Train with ``cfg.algorithm`` (or ``algorithm``); returns the report (also report.json)."""
    algo = algorithm or ALGORITHMS.get(cfg.algorithm)
    if not isinstance(algo, OnPolicyAlgorithm):
        raise ValueError(f"algorithm {cfg.algorithm!r} is not an on-policy algorithm")
    cfg, notes = resolve_settings(algo, cfg)
    check_parallel(cfg, algo)
    for note in notes:
        log.info("%s", note)
    head = None
    if algo.needs_critic and cfg.rl.critic == "shared":  # the head joins the policy's optimizer
        if model is None or tokenizer is None:
            model, tokenizer = load_policy(cfg.model, pick_device(cfg.run.device))
        head = ValueModel(model)
    s = common.setup(cfg, model, tokenizer, tasks, logger, needs_ref=cfg.rl.kl_coef > 0,
                     extra_params=list(head.head.parameters()) if head else None)
    critic = Critic(s, head) if algo.needs_critic else None
    check_world(s)
    probe = weight_sync_probe(s)
    verify_engine_weights(s, probe, step=s.start_step)  # the engine starts from the trainer's weights
    history = []
    for step in range(s.start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        # 1. collect
        collected, trajs, times, sampling = collect_groups(s, step)
        collected = s.world.gather_objects(collected)  # every rank's, for metrics and the check
        sampling = {k: v if k == "train/sampling_attempts" else s.world.sum_float(v)
                    for k, v in sampling.items()}
        fail_if_nothing_ran(collected, step)
        release = getattr(s.engine, "sleep", None)  # colocated vLLM frees its GPU memory
        if callable(release):
            release()
        # 2. rewards
        t0 = time.perf_counter()
        stats: dict[str, float] = {"train/optimizer_steps": 0}
        if trajs:
            batch = common.prepare_batch(s, trajs)
            outcome, cut = shaped_rewards(trajs, cfg)  # (B,) each
            # 3. π_old, importance weights, KL in the reward
            if cfg.rl.old_logprobs == "recompute":
                batch.old_logprobs = common.forward_logprobs(s, batch) * batch.loss_mask
            if cfg.rl.is_correction != "none":
                batch.is_weights = mismatch_weights(batch.old_logprobs, batch.logprobs, batch.loss_mask,
                                                    cfg.rl.is_correction, cfg.rl.is_cap, cfg.rl.is_level)
            beta = common.kl_coef(s)
            inputs, kl_per_token = advantage_inputs(s, batch, outcome, beta, critic)
            # 4. advantages, over the whole batch of every rank (batch-level baselines see it all)
            sizes = s.world.row_counts(len(batch))
            inputs = gathered(s.world, inputs, sizes)
            adv = algo.advantages(inputs, cfg.rl)
            adv = (adv[:, None] if adv.dim() == 1 else adv) * inputs.loss_mask  # (B_all, T_all)
            T = batch.loss_mask.shape[1]
            batch.advantages = s.world.my_rows(adv, sizes, T)
            batch.values = s.world.my_rows(inputs.values, sizes, T) if inputs.values is not None else None
            returns = inputs.outputs.get("returns")
            batch.returns = s.world.my_rows(returns, sizes, T) if returns is not None else None
            times["time/advantages"] = time.perf_counter() - t0
            # 5. update
            t0 = time.perf_counter()
            vstats: dict[str, float] = {}
            stats = common.update_policy(s, batch, algo, kl_coef=beta, step=step,
                                         extra_loss=critic.shared_loss(vstats) if critic else None)
            if critic is not None:
                vstats.update(critic.update(batch, step))
                s.extra.update(critic.state())
            stats.update(vstats)
            stats.update(batch_stats(s.world, batch, inputs, adv, kl_per_token, beta))
            n_trained = s.world.sum_float(len(trajs))
            stats["train/no_eos_share"] = s.world.sum_float(float(cut.sum())) / n_trained
            common.adapt_kl_coef(s, stats.get("train/ref_kl", 0.0), int(n_trained))
            times["time/update"] = time.perf_counter() - t0
            times["time/train_tokens_per_s"] = stats["train/tokens"] / max(times["time/update"], 1e-9)
        # 6. engine weight sync, verified on a fixed probe
        t0 = time.perf_counter()
        if s.world.main or not cfg.rollout.servers:  # rollout servers: rank 0 pushes for all
            s.engine.load_weights(s.model)
        s.world.barrier()
        gap = verify_engine_weights(s, probe, step)
        times["time/sync"] = time.perf_counter() - t0  # the push and its probe
        if gap is not None:
            times["sync/probe_gap"] = gap
        # 7. log (with the step's trajectories every run.log_rollouts_every steps), 8. checkpoint
        rollout_log.log_step(s, step, collected, trajs, batch if trajs else None)
        metrics = common.step_metrics(collected, cfg, times, t_step)
        metrics.update(run_errors.error_metrics(collected))  # errors/<phase>
        run_errors.check_error_streak(s.extra_runtime, step, collected, cfg.run.max_error_steps)
        metrics.update(stats)
        metrics.update(sampling)
        common.log_and_checkpoint(s, step, metrics, eval_fn)
        history.append(metrics)
    return common.finish(s, history)


def weight_sync_probe(s) -> list[int] | None:
    """A fixed probe prompt: the first training prompt's first 32 tokens (None when checks are off)."""
    if not s.cfg.rollout.weight_sync_check:
        return None

    task = s.prompts.tasks[0]
    try:
        env = s.env_factory()
        if hasattr(env, "bind_tokenizer"):  # chat-template environments render with it
            env.bind_tokenizer(s.tokenizer)
        return render_prompt(s.tokenizer, env.reset(task), task.id)[:32]
    except Exception as e:  # the episode loop reports a bad task; the probe falls back to its id
        log.warning("weight-sync probe: task %s cannot be reset (%s); probing with a fixed text",
                    task.id, e)
        return s.tokenizer.encode("The policy being trained", add_special_tokens=False)[:32]


def weight_sync_tol(cfg) -> float:
    """``rollout.weight_sync_tol``, or the one ``model.dtype`` sets."""
    return cfg.rollout.weight_sync_tol or (0.02 if cfg.model.dtype == "float32" else 0.25)


@torch.no_grad()
def verify_engine_weights(s, probe: list[int] | None, step: int) -> float | None:
    """The rollout engine greedily continues ``probe``; its recorded logprobs must equal the
    trainer's on the same tokens within :func:`weight_sync_tol`. A push that never reached the
    engine (a stale copy, a failed reload, a wrong parameter name) stops the run here instead of
    training on rollouts of an old policy (``rollout.weight_sync_on_mismatch warn``: a warning).
    Returns the largest gap (None without a probe)."""
    if probe is None:
        return None

    with s.compute():
        [out] = s.engine.generate([probe], SamplingParams(max_new_tokens=4, temperature=0.0))
    if not out.token_ids:
        return None
    t = Trajectory.from_prompt(list(probe), group_id="probe")
    t.append_sampled(out.token_ids, out.logprobs)
    batch = collate([t], s.tokenizer.pad_token_id)
    was = s.model.training
    s.model.eval()
    with s.compute():
        trainer, _ = token_logprobs(s.model, batch.to(s.device), 1.0, with_entropy=False)
    s.model.train(was)
    m = batch.loss_mask[0] > 0
    gap = float((trainer.cpu()[0][m] - batch.logprobs[0][m]).abs().max())
    tol = weight_sync_tol(s.cfg)
    if gap > tol:
        msg = (f"step {step}: the rollout engine disagrees with the trainer on a fixed probe "
               f"(largest logprob gap {gap:.4g} > rollout.weight_sync_tol = {tol:g}); its weights "
               f"are not the policy being trained (a weight push that did not arrive?)")
        if s.cfg.rollout.weight_sync_on_mismatch == "error":
            raise RuntimeError(msg)
        log.warning("%s; going on (rollout.weight_sync_on_mismatch = warn)", msg)
    return gap


def check_world(s) -> None:
    """Settings that data parallelism cannot honour yet, refused by name."""
    world, rl = s.world, s.cfg.rl
    if not world.active:
        return
    if rl.prompts_per_step % world.size:
        raise ValueError(f"rl.prompts_per_step = {rl.prompts_per_step} must be a multiple of the "
                         f"{world.size} training ranks (each rank rolls out whole groups)")
    local = rl.prompts_per_step // world.size * s.cfg.rollout.samples_per_prompt
    if local % rl.mini_batches_per_epoch:
        raise ValueError(f"each rank's {local} trajectories do not split into "
                         f"rl.mini_batches_per_epoch = {rl.mini_batches_per_epoch} equal parts")
    if rl.filter_zero_variance:
        raise ValueError("rl.filter_zero_variance (dynamic sampling) gives ranks batches of "
                         "different sizes; it is not supported under torchrun yet")


def by_group(trajs: list[Trajectory], group_size: int) -> list[Trajectory]:
    """The trajectories reordered so each ``group_id``'s samples are consecutive (first-seen order);
    every group must hold ``group_size`` of them."""
    groups: dict[str, list[Trajectory]] = {}
    for t in trajs:
        groups.setdefault(t.group_id, []).append(t)
    bad = {g: len(v) for g, v in groups.items() if len(v) != group_size}
    if bad:
        shown = ", ".join(f"{g!r}: {n}" for g, n in list(bad.items())[:3])
        raise ValueError(f"groups must hold rollout.samples_per_prompt = {group_size} trajectories "
                         f"each; these do not ({shown})")
    return [t for v in groups.values() for t in v]


def collect_groups(s, step: int) -> tuple[list[Trajectory], list[Trajectory], dict, dict]:
    """Roll out one batch (more with DAPO's dynamic sampling). Returns (everything collected, the
    trajectories to train on, timings, sampling metrics)."""
    rl, G = s.cfg.rl, s.cfg.rollout.samples_per_prompt
    trajs, times = common.rollout(s, step)
    collected = by_group(trajs, G)
    if not rl.filter_zero_variance:
        return collected, collected, times, {"train/trajectories_used": len(collected),
                                             "train/groups_dropped": 0}
    kept, attempts = drop_flat_groups(collected, G), 0
    while len(kept) < rl.prompts_per_step * G and attempts < rl.resample_max_attempts:
        attempts += 1
        more, more_times = common.rollout(s, step, attempt=attempts)
        more = by_group(more, G)
        for k in ("time/rollout", "time/reward"):
            times[k] = times.get(k, 0.0) + more_times.get(k, 0.0)
        collected += more
        kept += drop_flat_groups(more, G)
    kept = kept[:rl.prompts_per_step * G]
    dropped = (len(collected) - len(kept)) // G
    out = {"train/trajectories_used": len(kept), "train/groups_dropped": dropped}
    if rl.resample_max_attempts:
        out["train/sampling_attempts"] = 1 + attempts
    return collected, kept, times, out


def drop_flat_groups(trajs: list[Trajectory], group_size: int) -> list[Trajectory]:
    """The trajectories of groups whose rewards are not all equal (grouped input)."""
    flat = zero_variance_groups(torch.tensor([t.reward for t in trajs]), group_size)  # (N/G,)
    return [t for i, t in enumerate(trajs) if not flat[i // group_size]]


def fail_if_nothing_ran(trajs: list[Trajectory], step: int) -> None:
    """Every episode of a step failing is a broken setup, not a bad sample: stop, saying why."""
    if trajs and all(t.error for t in trajs):
        raise RuntimeError(f"step {step}: all {len(trajs)} episodes failed, nothing to train on; "
                           f"the first: {trajs[0].error}")


def shaped_rewards(trajs: list[Trajectory], cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) rewards: the trajectory's reward, ``- rl.no_eos_penalty`` when a budget cut it (no EOS,
    no environment done), plus DAPO's overlong shaping over the sampled-token budget; and (B,)
    1.0 where a budget cut the trajectory."""
    rl = cfg.rl
    r = torch.tensor([float(t.reward) for t in trajs])  # (B,)
    cut = torch.tensor([t.finish_reason not in ("eos", "done") for t in trajs]).float()
    r = r - rl.no_eos_penalty * cut
    budget = cfg.rollout.max_new_tokens * cfg.rollout.max_turns
    lengths = torch.tensor([t.num_sampled for t in trajs])
    return r + overlong_penalty(lengths, budget, rl.overlong_buffer_len, rl.overlong_penalty), cut


def advantage_inputs(s, batch: Batch, outcome: torch.Tensor, beta: float, critic: Critic | None
                     ) -> tuple[AdvantageInputs, torch.Tensor]:
    """The advantage function's inputs, with the KL in the reward (once) when ``rl.kl_in_reward``.
    Returns them and the per-token KL of π_old to the reference (zeros without a reference)."""
    rl, m = s.cfg.rl, batch.loss_mask  # (B, T)
    kl = torch.zeros_like(m)
    if batch.ref_logprobs is not None:
        kl = kl_estimator(rl.kl_estimator)(batch.old_logprobs, batch.ref_logprobs) * m  # (B, T)
    in_reward = beta if rl.kl_in_reward else 0.0
    token_rewards = kl_penalized_rewards(outcome, kl, m, in_reward)  # (B, T)
    rewards = outcome - in_reward * kl.sum(-1)  # (B,)
    values = critic.values(batch) * m if critic is not None else None
    return AdvantageInputs(rewards, token_rewards, m, s.cfg.rollout.samples_per_prompt, values,
                           state=s.extra), kl


def gathered(world, x: AdvantageInputs, sizes: list[int]) -> AdvantageInputs:
    """The advantage inputs of every rank's rows, in rank order (itself in one process)."""
    if not world.active:
        return x
    g = lambda t: world.gather_rows(t, sizes)  # noqa: E731
    return AdvantageInputs(g(x.rewards), g(x.token_rewards), g(x.loss_mask), x.group_size,
                           g(x.values), state=x.state)


def batch_stats(world, batch: Batch, inputs: AdvantageInputs, adv: torch.Tensor, kl: torch.Tensor,
                beta: float) -> dict:
    """Per-step numbers of the (global) batch the update saw."""
    m = inputs.loss_mask  # (B_all, T_all)
    n = m.sum().clamp(min=1.0)
    out = {"train/kl_coef": beta, "train/shaped_reward": float(inputs.rewards.mean()),
           "train/ref_kl": world.sum_float(float(kl.sum())) / float(n),
           "train/advantage": float((adv * m).sum() / n)}
    if batch.is_weights is not None:
        out["train/is_weight"] = world.sum_float(float((batch.is_weights * batch.loss_mask).sum())) / float(n)
    if inputs.values is not None:
        out["train/values"] = float(inputs.values.sum() / n)
        out["train/returns"] = float(inputs.outputs["returns"].sum() / n)
    for k, v in inputs.outputs.items():
        if isinstance(v, (int, float)):
            out[f"train/{k}"] = float(v)
    return out
