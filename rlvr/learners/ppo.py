"""PPO with a learned critic (Schulman et al. 2017, https://arxiv.org/abs/1707.06347), in the
RLHF form of Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593) and Ouyang et al. 2022.

Each step: samples → outcome rewards (minus ``rl.no_eos_penalty`` for trajectories cut by a
budget) → per-token rewards: ``-β KL_t`` on every trained token plus the outcome on the last one
(with ``rl.kl_in_reward``, as the bundled PPO config sets; with it off the KL is a β-weighted loss
term instead) → optional reward whitening → critic values V(s_t) → GAE(γ, λ) over
trained tokens → advantage whitening → ``rl.epochs_per_batch`` × ``rl.mini_batches_per_epoch``
steps of the clipped surrogate for the policy and the (clipped) value loss for the critic → log →
checkpoint.

Critic (``rl.critic``): ``separate`` — a copy of the initial policy with a linear value head,
trained by its own optimizer (``rl.critic_lr``); ``shared`` — a value head on the policy's own
network, its loss (× ``rl.vf_coef``) added to the policy loss under one optimizer.
The value of token ``t`` is read from the hidden state at ``t - 1``: the state in which token
``t`` was chosen, so values line up with ``loss_mask``.

Deviations: the value forward runs the whole causal LM (logits included) so any HF model or peft
adapter works as a critic body; GAE skips observation tokens (see :func:`rlvr.advantages.gae`).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

import rlvr
from rlvr.advantages import gae, whiten
from rlvr.batch import Batch
from rlvr.learners import common
from rlvr.losses import aggregate, kl_estimator, kl_penalized_rewards, value_loss

CRITICS = ("separate", "shared")


class ValueModel(nn.Module):
    """A causal LM body with a linear value head: ``values(batch) -> (B, T)`` aligned with tokens."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        hidden = body.config.hidden_size if hasattr(body, "config") else body.get_input_embeddings().embedding_dim
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)  # V = 0 at the start: advantages begin as plain returns
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: Batch) -> torch.Tensor:
        out = self.body(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        output_hidden_states=True, use_cache=False)
        h = out.hidden_states[-1][:, :-1, :]  # (B, T-1, H): state before tokens 1..T-1
        v = self.head(h.to(self.head.weight.dtype)).squeeze(-1).float()  # (B, T-1)
        return torch.cat([v.new_zeros((v.shape[0], 1)), v], dim=1)  # (B, T)


@rlvr.algorithm("ppo")
def run(cfg) -> dict:
    """PPO: critic + GAE, KL-penalised per-token rewards, clipped policy and value losses."""
    return train(cfg)


def train(cfg, model=None, tokenizer=None, tasks=None, eval_fn=None, logger=None) -> dict:
    if cfg.rl.critic not in CRITICS:
        raise ValueError(f"rl.critic {cfg.rl.critic!r} is not one of {CRITICS}")
    shared = cfg.rl.critic == "shared"
    if shared:  # the head must exist before the optimizer is built, so it joins its param groups
        from rlvr.models import load_policy, pick_device

        if model is None or tokenizer is None:
            model, tokenizer = load_policy(cfg.model, pick_device(cfg.run.device))
        critic = ValueModel(model)
        s = common.setup(cfg, model, tokenizer, tasks, logger, needs_ref=cfg.rl.kl_coef > 0,
                         extra_params=list(critic.head.parameters()))
        critic.body = s.model  # LoRA may have wrapped the model in setup
        critic_opt = None
    else:
        s = common.setup(cfg, model, tokenizer, tasks, logger, needs_ref=cfg.rl.kl_coef > 0)
        critic = ValueModel(copy.deepcopy(s.model))
        critic_opt = torch.optim.AdamW([p for p in critic.parameters() if p.requires_grad],
                                       lr=cfg.rl.critic_lr or cfg.optim.lr,
                                       weight_decay=cfg.optim.weight_decay)
    critic.to(s.device)
    if "critic" in s.extra:  # resumed
        critic.load_state_dict(s.extra["critic"])
        if critic_opt is not None:
            critic_opt.load_state_dict(s.extra["critic_optimizer"])
    history = []
    for step in range(s.start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        # collect + score
        trajs, times = common.rollout(s, step)
        # advantages: per-token rewards → values → GAE
        t0 = time.perf_counter()
        outcome = torch.tensor([t.reward for t in trajs])  # (N,)
        cut = torch.tensor([t.finish_reason not in ("eos", "done") for t in trajs])  # no EOS
        outcome = outcome - cfg.rl.no_eos_penalty * cut.float()
        batch = common.prepare_batch(s, trajs)
        m = batch.loss_mask  # (N, T) the training mask
        beta = common.kl_coef(s)
        kl = torch.zeros_like(m)
        if batch.ref_logprobs is not None:
            kl = kl_estimator(cfg.rl.kl_estimator)(batch.logprobs, batch.ref_logprobs) * m
        token_rewards = kl_penalized_rewards(outcome, kl, m, beta if cfg.rl.kl_in_reward else 0.0)
        if cfg.rl.whiten_rewards:
            token_rewards = whiten(token_rewards, m, shift_mean=False)
        batch.values = critic_values(critic, batch, s) * m  # (N, T) old values
        adv, batch.returns = gae(token_rewards, batch.values, m, cfg.rl.gamma, cfg.rl.lam)
        batch.advantages = whiten(adv, m) if cfg.rl.whiten_advantages else adv
        times["time/advantages"] = time.perf_counter() - t0
        # update: policy (with the shared head's value loss), then a separate critic
        t0 = time.perf_counter()
        vstats: dict[str, float] = {}
        extra_loss = _value_loss_fn(critic, cfg, vstats) if shared else None
        stats = common.update_policy(s, batch, clipped=True, kl_coef=beta, step=step, extra_loss=extra_loss)
        if not shared:
            vstats.update(update_critic(critic, critic_opt, batch, cfg, s, step))
        times["time/update"] = time.perf_counter() - t0
        times["time/train_tokens_per_s"] = stats["train/tokens"] / max(times["time/update"], 1e-9)
        stats["train/kl_coef"] = beta
        common.adapt_kl_coef(s, float(kl.sum() / m.sum().clamp(min=1)), len(trajs))
        # log + checkpoint
        metrics = common.step_metrics(trajs, cfg, times, t_step)
        metrics.update(stats)
        metrics.update(vstats)
        metrics["train/no_eos_share"] = float(cut.float().mean())
        metrics["train/values"] = float(batch.values.sum() / m.sum().clamp(min=1))
        metrics["train/returns"] = float(batch.returns.sum() / m.sum().clamp(min=1))
        s.extra["critic"] = critic.state_dict()
        if critic_opt is not None:
            s.extra["critic_optimizer"] = critic_opt.state_dict()
        common.log_and_checkpoint(s, step, metrics, eval_fn)
        history.append(metrics)
    return common.finish(s, history)


@torch.no_grad()
def critic_values(critic: ValueModel, batch: Batch, s) -> torch.Tensor:
    """Old values (B, T) of the whole batch, micro-batched, padded back to the batch width."""
    was = critic.training
    critic.eval()
    out = []
    for mb in batch.split(s.cfg.optim.micro_batch_size):
        v = critic(mb.to(s.device)).cpu()
        out.append(torch.nn.functional.pad(v, (0, batch.input_ids.shape[1] - v.shape[1])))
    critic.train(was)
    return torch.cat(out)


def _value_loss_fn(critic: ValueModel, cfg, vstats: dict):
    """vf_coef × the value loss of a micro-batch, normalised like the policy loss (shared head)."""
    def loss(mb: Batch, norm: dict) -> torch.Tensor:
        per_token, clipped = value_loss(critic(mb), mb.values, mb.returns, cfg.rl.value_clip or None)
        vl = aggregate(per_token, mb.loss_mask, cfg.rl.loss_agg, **norm)
        vstats["train/value_loss"] = vstats.get("train/value_loss", 0.0) + vl.item()
        return cfg.rl.vf_coef * vl
    return loss


def update_critic(critic: ValueModel, optimizer, batch: Batch, cfg, s, step: int) -> dict[str, float]:
    """The separate critic's epochs × mini-batches, micro-batched, normalised once per mini-batch."""
    critic.train()
    losses, clip_sum, n_tok = [], 0.0, 0.0
    params = [p for p in critic.parameters() if p.requires_grad]
    for epoch in range(cfg.rl.epochs_per_batch):
        for mini in common.mini_batches(batch, cfg.rl.mini_batches_per_epoch,
                                        seed=cfg.run.seed * 1_000_003 + step * 101 + epoch):
            norm = dict(num_seqs=len(mini), num_tokens=mini.num_tokens, max_len=common.loss_max_len(cfg))
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for mb in mini.split(cfg.optim.micro_batch_size):
                mb = mb.to(s.device)
                per_token, clipped = value_loss(critic(mb), mb.values, mb.returns, cfg.rl.value_clip or None)
                loss = cfg.rl.vf_coef * aggregate(per_token, mb.loss_mask, cfg.rl.loss_agg, **norm)
                loss.backward()
                total += loss.item()
                clip_sum += (clipped.float() * mb.loss_mask).sum().item()
                n_tok += mb.loss_mask.sum().item()
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm or float("inf"))
            optimizer.step()
            losses.append(total)
    return {"train/value_loss": sum(losses) / max(len(losses), 1),
            "train/value_clip_frac": clip_sum / max(n_tok, 1.0)}
