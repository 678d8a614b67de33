"""Trajectories → padded tensors, and the per-token log-probabilities of a batch under a model.

Every (B, T) tensor here is indexed by token position: column ``t`` describes token ``t`` of the
sequence. ``token_logprobs(...)[b, t]`` is ``log p(token_t | tokens_<t)``, so it lines up with
``loss_mask[b, t]`` (1 = token ``t`` was sampled by the policy) and with the behaviour
``logprobs[b, t]`` the engine recorded when it sampled that token. Column 0 has no prediction
and is 0; so are the prompt columns before the micro-batch's shortest prompt (never in a loss). Padding is on the right; padded positions have
``attention_mask = 0`` and ``loss_mask = 0``.

Used by every learner (GRPO, PPO, RLOO, REINFORCE, SFT, DPO, reward model)::

    batch = collate(trajectories, pad_token_id=tok.pad_token_id)
    for mb in batch.split(micro_batch_size):
        logprobs, entropy = token_logprobs(model, mb.to(device), temperature=1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import torch

from rlvr.core.models import full_attention, plain_head
from rlvr.core.types import Trajectory
from rlvr.engines.hf import forward_kwargs
from rlvr.engines.kv_cache import new_cache
from rlvr.learners.fused_head import fused_head_applies, head_logprobs


@dataclass
class Batch:
    """Padded tensors of B trajectories (right padding to the longest, T)."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    loss_mask: torch.Tensor  # (B, T) float, 1 = token sampled by the policy
    logprobs: torch.Tensor  # (B, T) float, behaviour logprob of sampled tokens, 0 elsewhere
    advantages: torch.Tensor  # (B, T) float, per-token advantage (0 where not given)
    rewards: torch.Tensor  # (B,) float, trajectory reward
    prompt_lens: torch.Tensor  # (B,) long
    lengths: torch.Tensor  # (B,) long, real tokens per row
    # Optional per-token tensors a learner attaches (same (B, T) layout), e.g. the reference
    # model's logprobs, the critic's values and the GAE returns.
    ref_logprobs: Optional[torch.Tensor] = None
    old_logprobs: Optional[torch.Tensor] = None  # pi_old of the ratio (engine's or recomputed)
    is_weights: Optional[torch.Tensor] = None  # train/inference mismatch correction weights
    sampled_mask: Optional[torch.Tensor] = None  # tokens the engine sampled (loss_mask may add
    # observations under the --no-mask ablation)
    values: Optional[torch.Tensor] = None
    returns: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def _tensor_fields(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)]

    def to(self, device) -> "Batch":
        return replace(self, **{k: v.to(device) for k, v in self._tensor_fields()})

    def select(self, index) -> "Batch":
        """Rows ``index`` (a slice, list or index tensor), trimmed to their longest row."""
        sub = replace(self, **{k: v[index] for k, v in self._tensor_fields()})
        t = int(sub.lengths.max()) if len(sub) else 0
        return replace(sub, **{k: v[:, :t] for k, v in sub._tensor_fields() if v.dim() == 2})

    def split(self, size: int, *, by_length: bool = False) -> list["Batch"]:
        """Micro-batches of at most ``size`` rows: consecutive rows, or with ``by_length`` the rows
        in :meth:`length_order` (longest first), so that each micro-batch, trimmed to its own
        longest row, carries as little padding as ``size`` allows. Together they hold exactly this
        batch's rows either way."""
        if size < 1:
            raise ValueError(f"micro-batch size must be >= 1, got {size}")
        if not by_length:
            return [self.select(slice(i, i + size)) for i in range(0, len(self), size)]
        order = self.length_order()
        return [self.select(order[i:i + size]) for i in range(0, len(self), size)]

    def length_order(self) -> torch.Tensor:
        """Row indices (B,), longest row first (ties keep their order): the row order of
        ``split(size, by_length=True)``."""
        return torch.sort(self.lengths, descending=True, stable=True).indices

    @property
    def padded_tokens(self) -> int:
        """Padding positions of the (B, T) tensors: what a forward pass over them wastes."""
        return self.input_ids.numel() - int(self.lengths.sum())

    @property
    def num_tokens(self) -> int:
        """Tokens in the loss (``loss_mask`` sum)."""
        return int(self.loss_mask.sum())


def collate(trajectories: Sequence[Trajectory], pad_token_id: int) -> Batch:
    """Pad trajectories into a :class:`Batch` (advantages zero: the learner fills them in)."""
    if not trajectories:
        raise ValueError("cannot collate an empty list of trajectories")
    B = len(trajectories)
    lengths = torch.tensor([len(t) for t in trajectories], dtype=torch.long)
    if int(lengths.min()) == 0:
        i = int((lengths == 0).nonzero()[0])
        raise ValueError(f"trajectory {i} ({trajectories[i].task_id}) has no tokens")
    T = int(lengths.max())
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros((B, T))
    logprobs = torch.zeros((B, T))
    for i, t in enumerate(trajectories):  # one copy per trajectory, not per token
        n = len(t)
        input_ids[i, :n] = torch.tensor(t.token_ids, dtype=torch.long)
        loss_mask[i, :n] = torch.tensor(t.loss_mask, dtype=torch.float32)
        logprobs[i, :n] = torch.tensor(t.logprobs, dtype=torch.float32)
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    return Batch(
        input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, logprobs=logprobs,
        advantages=torch.zeros((B, T)), rewards=torch.tensor([float(t.reward) for t in trajectories]),
        prompt_lens=torch.tensor([t.prompt_len for t in trajectories], dtype=torch.long),
        lengths=lengths)


def token_logprobs(model, batch: Batch, temperature: float = 1.0, *, with_entropy: bool = True,
                   entropy_grad: bool = True, only: Optional[torch.Tensor] = None,
                   share_prompts: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-token log-probabilities (B, T) of each token given its prefix, and entropies (B, T).

    ``out[b, t] = log_softmax(logits[b, t-1] / temperature)[input_ids[b, t]]``; the entropy at
    ``t`` is that of the same distribution (the one token ``t`` was drawn from). Temperature 0
    (greedy sampling) is treated as 1, as the engine records it. Computed in float32 whatever the
    model dtype, with one gather and one logsumexp (no full log-softmax, no loop over tokens).

    Only columns from :func:`first_scored_column` on are computed (the micro-batch's shortest
    prompt, or an earlier ``loss_mask`` token): the model's head runs on those positions only
    (``logits_to_keep``), and columns before are 0 — at T = 2048 with a 152k vocabulary every
    skipped prompt position saves a 600 kB row of fp32 logits per sequence. ``entropy_grad=False``
    (the entropy is only a diagnostic, ``rl.entropy_coef == 0``) computes it without autograd,
    one sequence at a time, instead of keeping a (B, T, V) graph for it.

    ``only`` (B, T), e.g. the ``loss_mask``: the tokens wanted; both outputs are 0 elsewhere. For
    a model whose logits are its output embedding applied to its decoder's last hidden state
    (:func:`plain_head`), the head then runs on those tokens' positions alone — a multi-turn
    trajectory's observations (retrieved passages, tool results) get no (V,) row of logits.

    ``share_prompts`` (with ``only``, on such a model with full attention in every layer, not
    under activation checkpointing): rows with the same prompt (the G samples of a group) run
    the decoder over it once (:func:`shared_prompt_hidden`), when that saves at least
    :data:`SHARE_MIN_SAVING` of the batch's tokens. The logprobs equal the whole-sequence
    pass up to float rounding, and so do the gradients (they flow back through the shared keys
    and values into the prompt's single pass).
    """
    if only is not None and (parts := plain_head(model)) is not None:
        share = share_prompts and full_attention(model.config) and not _checkpointed(model)
        return _selected_logprobs(*parts, batch, temperature, with_entropy, entropy_grad, only, share)
    T = batch.input_ids.shape[1]
    start = first_scored_column(batch)
    kw = {}
    keep_kw = forward_kwargs(model)[1] if start > 1 else None
    if keep_kw:
        kw[keep_kw] = T - start + 1  # positions start-1 .. T-1; the last predicts nothing
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kw)
    logits = out.logits[:, out.logits.shape[1] - (T - start + 1):-1].float()  # (B, T-start, V)
    if temperature and temperature != 1.0:
        logits = logits / temperature
    targets = batch.input_ids[:, start:]  # (B, T-start)
    lse = torch.logsumexp(logits, dim=-1)  # (B, T-start)
    lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (B, T-start)
    logprobs = torch.nn.functional.pad(lp, (start, 0))  # (B, T), aligned with loss_mask
    keep = None if only is None else (only > 0).to(logprobs.dtype)  # (B, T)
    if keep is not None:
        logprobs = logprobs * keep
    if not with_entropy:
        return logprobs, None
    if entropy_grad:
        ent = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)  # H = logsumexp(z) - sum p z
    else:
        with torch.no_grad():
            ent = torch.stack([lse[b] - (torch.softmax(logits[b], dim=-1) * logits[b]).sum(-1)
                               for b in range(logits.shape[0])]) if logits.shape[0] else lse.detach()
    ent = torch.nn.functional.pad(ent, (start, 0))  # (B, T)
    return logprobs, (ent if keep is None else ent * keep)


def _selected_logprobs(decoder, head, batch: Batch, temperature: float, with_entropy: bool,
                       entropy_grad: bool, only: torch.Tensor, share_prompts: bool = False
                       ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """:func:`token_logprobs` at the ``only`` tokens: the decoder over the whole batch (or each
    distinct prompt once, then every row's remainder), the head, logsumexp and gather on the N
    selected positions (N, V) only."""
    want = only > 0
    want[:, 0] = False  # column 0 has no prediction
    rows, cols = want.nonzero(as_tuple=True)  # (N,) each: token (rows, cols) is predicted at cols-1
    groups = shared_prompts(batch) if share_prompts else None
    if groups is not None:
        picked = shared_prompt_hidden(decoder, batch, *groups, rows, cols - 1)  # (N, H)
    else:
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         use_cache=False).last_hidden_state  # (B, T, H)
        picked = hidden[rows, cols - 1]  # (N, H)
    zeros = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=picked.device)  # (B, T)
    if not (with_entropy and entropy_grad) and fused_head_applies(head):  # no (N, V) logits kept
        lp, ent = head_logprobs(head, picked, batch.input_ids[rows, cols], temperature, entropy=with_entropy)
        return zeros.index_put((rows, cols), lp), (None if ent is None else zeros.index_put((rows, cols), ent))
    logits = head(picked).float()  # (N, V)
    if temperature and temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    lp = logits.gather(-1, batch.input_ids[rows, cols].unsqueeze(-1)).squeeze(-1) - lse  # (N,)
    logprobs = zeros.index_put((rows, cols), lp)
    if not with_entropy:
        return logprobs, None
    if entropy_grad:
        ent = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)  # (N,)
    else:
        with torch.no_grad():  # in chunks: no (N, V) softmax kept or built at once
            ent = torch.cat([c_lse - (torch.softmax(c, dim=-1) * c).sum(-1)
                             for c, c_lse in zip(logits.split(1024), lse.split(1024))]
                            ) if len(lse) else lse.detach()
    return logprobs, zeros.index_put((rows, cols), ent)


SHARE_MIN_SAVING = 0.1  # the share of a batch's tokens a shared prompt pass must save to run


def shared_prompts(batch: Batch) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(U,) one row of each distinct prompt (``input_ids`` before ``prompt_lens``) and (B,) the
    index of each row's prompt among them; None when sharing would save less than
    :data:`SHARE_MIN_SAVING` of the batch's real tokens."""
    B, P = len(batch), int(batch.prompt_lens.max()) if len(batch) else 0
    if B < 2 or int(batch.prompt_lens.min()) < 1:  # a row without a prompt has nothing to share
        return None
    col = torch.arange(P, device=batch.input_ids.device)
    key = batch.input_ids[:, :P].masked_fill(col[None] >= batch.prompt_lens[:, None], -1)  # (B, P)
    key = torch.cat([batch.prompt_lens[:, None], key], 1)  # a prompt is its length and its ids
    _, inverse = torch.unique(key, dim=0, return_inverse=True)  # (B,)
    U = int(inverse.max()) + 1
    first = torch.full((U,), B, dtype=torch.long, device=inverse.device).scatter_reduce(
        0, inverse, torch.arange(B, device=inverse.device), "amin")  # (U,) first row of each
    saved = int(batch.prompt_lens.sum()) - int(batch.prompt_lens[first].sum())
    if saved < SHARE_MIN_SAVING * int(batch.lengths.sum()):
        return None
    return first, inverse


def shared_prompt_hidden(decoder, batch: Batch, first: torch.Tensor, inverse: torch.Tensor,
                         rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state (N, H) at positions (``rows``, ``cols``) of the batch,
    computed with each distinct prompt once: a pass over the U prompts (right padded) keeps
    their keys and values, every row gets its prompt's cache rows, and a second pass runs each
    row's tokens after its prompt on them (causal, at their own positions). Prefix sharing as
    in "Prefix Grouper" (arXiv:2506.05433): the same attention, fewer prompt tokens computed."""
    dev = batch.input_ids.device
    plen = batch.prompt_lens  # (B,)
    P = int(plen[first].max())
    col = torch.arange(P, device=dev)
    p_mask = (col[None] < plen[first][:, None]).long()  # (U, P), right padded
    cache_kw = forward_kwargs(decoder)[0]
    cache = new_cache(decoder)
    head_h = decoder(input_ids=batch.input_ids[first, :P], attention_mask=p_mask, use_cache=True,
                     **{cache_kw: cache}).last_hidden_state  # (U, P, H)
    cache.batch_select_indices(inverse)  # (B, ...) each row's prompt keys and values
    S = max(int((batch.lengths - plen).max()), 1)
    tail_col = plen[:, None] + torch.arange(S, device=dev)[None]  # (B, S) the columns after it
    tail_mask = (tail_col < batch.lengths[:, None]).long()
    tail_ids = batch.input_ids.gather(1, tail_col.clamp(max=batch.input_ids.shape[1] - 1))
    tail_h = decoder(input_ids=tail_ids * tail_mask, attention_mask=torch.cat([p_mask[inverse], tail_mask], 1),
                     position_ids=tail_col, use_cache=True, **{cache_kw: cache}).last_hidden_state  # (B, S, H)
    in_prompt = cols < plen[rows]  # (N,) the prompt's last position predicts the first token after it
    from_head = head_h[inverse[rows], cols.clamp(max=P - 1)]  # (N, H)
    from_tail = tail_h[rows, (cols - plen[rows]).clamp(min=0)]  # (N, H)
    return torch.where(in_prompt[:, None], from_head, from_tail)


def _checkpointed(model) -> bool:
    """Whether activation checkpointing is on (its layers drop the cache a shared pass needs)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def first_scored_column(batch: Batch) -> int:
    """The first column :func:`token_logprobs` computes: the shortest prompt of the batch, or the
    first column holding a ``loss_mask`` token if that comes earlier; at least 1 (column 0 has no
    prediction). Every token a loss or a KL can read lies at or after it."""
    start = int(batch.prompt_lens.min()) if len(batch) else 1
    cols = (batch.loss_mask > 0).any(0).nonzero()
    if len(cols):
        start = min(start, int(cols[0]))
    return max(1, min(start, batch.input_ids.shape[1] - 1))
