"""The critic of algorithms that declare ``needs_critic`` (PPO): a value head on a causal LM body.

``rl.critic``: ``separate`` — a copy of the initial policy with a linear value head, trained by its
own optimizer (``rl.critic_lr``) after the policy's update; ``shared`` — a value head on the
policy's own network whose loss (× ``rl.vf_coef``) joins the policy loss under one optimizer.
The value of token ``t`` is read from the hidden state at ``t - 1``: the state in which token
``t`` was chosen, so values line up with ``loss_mask``. The value forward runs the whole causal
LM (logits included) so any HF model or peft adapter works as a critic body.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from rlvr.algorithms.losses import aggregate, value_loss
from rlvr.learners.batch import Batch
from rlvr.learners.common import global_norm, mini_batches


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


class Critic:
    """The value model, its optimizer (separate critic only) and its checkpointed state."""

    def __init__(self, s, head: ValueModel | None = None) -> None:
        cfg = s.cfg
        self.s, self.shared = s, cfg.rl.critic == "shared"
        if self.shared:
            self.model, self.optimizer = head, None  # built before setup so the policy optimizer has it
            self.model.body = s.model  # LoRA may have wrapped the model in setup
        else:
            self.model = ValueModel(copy.deepcopy(s.model))
            self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                               lr=cfg.rl.critic_lr or cfg.optim.lr,
                                               weight_decay=cfg.optim.weight_decay)
        self.model.to(s.device)
        if "critic" in s.extra:  # resumed
            self.model.load_state_dict(s.extra["critic"])
            if self.optimizer is not None:
                self.optimizer.load_state_dict(s.extra["critic_optimizer"])

    def state(self) -> dict:
        out = {"critic": self.model.state_dict()}
        if self.optimizer is not None:
            out["critic_optimizer"] = self.optimizer.state_dict()
        return out

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        """Old values (B, T) of the whole batch, micro-batched, padded back to the batch width."""
        was = self.model.training
        self.model.eval()
        out = torch.zeros(batch.input_ids.shape)
        size, buckets = self.s.cfg.optim.micro_batch_size, self.s.cfg.optim.length_buckets
        order = batch.length_order() if buckets else torch.arange(len(batch))
        with self.s.compute():
            for idx, mb in zip(order.split(size), batch.split(size, by_length=buckets)):
                v = self.model(mb.to(self.s.device)).float().cpu()
                out[idx, :v.shape[1]] = v
        self.model.train(was)
        return out

    def shared_loss(self, vstats: dict) -> Callable | None:
        """vf_coef × the value loss of a micro-batch, normalised like the policy loss (shared head);
        None for a separate critic."""
        if not self.shared:
            return None
        rl = self.s.cfg.rl

        def loss(mb: Batch, norm: dict) -> torch.Tensor:
            per_token, _ = value_loss(self.model(mb), mb.values, mb.returns, rl.value_clip or None)
            vl = aggregate(per_token, mb.loss_mask, rl.loss_agg, **norm)
            vstats["train/value_loss"] = vstats.get("train/value_loss", 0.0) + vl.item()
            return rl.vf_coef * vl
        return loss

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        """The separate critic's epochs × mini-batches, micro-batched, normalised once per
        mini-batch (a shared head trained with the policy: nothing to do)."""
        if self.shared:
            return {}

        s, rl = self.s, self.s.cfg.rl
        self.model.train()
        losses, clip_sum, n_tok = [], 0.0, 0.0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for epoch in range(rl.epochs_per_batch):
            for mini in mini_batches(batch, rl.mini_batches_per_epoch,
                                     seed=s.cfg.run.seed * 1_000_003 + step * 101 + epoch):
                norm = global_norm(s, mini)
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for mb in mini.split(s.cfg.optim.micro_batch_size, by_length=s.cfg.optim.length_buckets):
                    mb = mb.to(s.device)
                    with s.compute():
                        v = self.model(mb)
                    per_token, clipped = value_loss(v, mb.values, mb.returns, rl.value_clip or None)
                    loss = rl.vf_coef * aggregate(per_token, mb.loss_mask, rl.loss_agg, **norm)
                    loss.backward()
                    total += loss.item()
                    clip_sum += (clipped.float() * mb.loss_mask).sum().item()
                    n_tok += mb.loss_mask.sum().item()
                s.world.sum_grads_(params)
                total = s.world.sum_float(total)
                gn = torch.nn.utils.clip_grad_norm_(params, s.cfg.optim.max_grad_norm or float("inf"))
                if not torch.isfinite(gn):
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                self.optimizer.step()
                losses.append(total)
        return {"train/value_loss": sum(losses) / max(len(losses), 1),
                "train/value_clip_frac": clip_sum / max(n_tok, 1.0)}
