"""Token logprobs and entropies through the output head, in chunks, without keeping the logits.

Through autograd, ``logsumexp(head(h))`` keeps the (N, V) fp32 logits for its backward, and
the gather's backward builds another (N, V) zeros tensor: at N = 8192 trained tokens and a
152k vocabulary that is 5 GB for each. :func:`head_logprobs` computes, ``chunk`` rows at a time,

    z = head(h) / temperature      lse = logsumexp(z)      logprob = z[target] - lse
    entropy = lse - sum_j softmax(z)_j z_j

keeps only ``h``, the weights and ``lse`` (N,), and in the backward recomputes each chunk's
logits for ``d logprob / d z = onehot(target) - softmax(z)`` (one more matmul with the head:
the trade FlashAttention makes for its attention matrix, and Liger-Kernel's fused linear
cross-entropy for this one). The entropy is a diagnostic here and gets no gradient; a loss that
trains on it (``rl.entropy_coef``) takes the autograd path in :func:`rlvr.learners.batch.token_logprobs`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from rlvr.core.models import unhooked

CHUNK = 1024  # rows of logits in memory at once: (CHUNK, V) fp32


def fused_head_applies(head) -> bool:
    """Whether ``head`` is a plain ``nn.Linear`` with no forward hooks: a LoRA-wrapped or sharded
    head, or one whose output a hook changes (a logit bias), runs as a module, as the engine runs it."""
    if type(head) is not torch.nn.Linear or type(head.weight) is not torch.nn.Parameter:
        return False
    return unhooked(head)


def head_logprobs(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                  temperature: float = 1.0, chunk: int = CHUNK, *, entropy: bool = True
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(N,) logprob of each ``targets`` token and (N,) entropy (no gradient; None without
    ``entropy``) of the distribution ``head(hidden) / temperature`` it was drawn from, fp32;
    ``hidden`` (N, H). Gradients reach ``hidden`` and the head's weight and bias through the
    logprobs. Under autocast the head runs in the autocast dtype, in the forward and in the
    backward's recomputation alike."""
    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else head.weight.dtype
    t = float(temperature) if temperature else 1.0
    lp, ent = _HeadLogprobs.apply(hidden, head.weight, head.bias, targets, t, chunk, dtype, entropy)
    return lp, (ent if entropy else None)


def _logits(h, weight, bias, t: float) -> torch.Tensor:
    z = F.linear(h.to(weight.dtype), weight, bias).float()  # (c, V), as head(h).float()
    return z / t if t != 1.0 else z


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, t, chunk, dtype, entropy):
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        lps, ents, lses = [], [], []
        with torch.autocast(hidden.device.type, enabled=False):
            for h, y in zip(hidden.split(chunk), targets.split(chunk)):
                z = _logits(h, w, b, t)  # (c, V)
                m = z.amax(-1, keepdim=True)  # (c, 1)
                e = (z - m).exp_()  # (c, V) unnormalised probabilities
                total = e.sum(-1, keepdim=True)  # (c, 1)
                lse = m + total.log()  # (c, 1)
                lps.append((z.gather(-1, y[:, None]) - lse).squeeze(1))
                if entropy:
                    ents.append((lse - (e * z).sum(-1, keepdim=True) / total).squeeze(1))
                lses.append(lse.squeeze(1))
        empty = hidden.new_zeros(0, dtype=torch.float32)
        lse = torch.cat(lses) if lses else empty
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.t, ctx.chunk, ctx.dtype = t, chunk, dtype
        ent = torch.cat(ents) if ents else empty.clone()
        ctx.mark_non_differentiable(ent)
        return (torch.cat(lps) if lps else empty.clone()), ent

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        t, chunk = ctx.t, ctx.chunk
        w = weight.to(ctx.dtype)
        b = bias.to(ctx.dtype) if bias is not None else None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        g_h = torch.empty_like(hidden) if need_h else None
        g_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        g_b = torch.zeros_like(bias, dtype=torch.float32) if need_b and bias is not None else None
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk):
                h, y, g = hidden[s:s + chunk], targets[s:s + chunk], g_lp[s:s + chunk].float()
                p = (_logits(h, w, b, t) - lse[s:s + chunk, None]).exp_()  # (c, V) softmax(z)
                gz = p.mul_(-g[:, None])  # d logprob / dz = onehot(target) - softmax(z)
                gz.scatter_add_(1, y[:, None], g[:, None])
                if t != 1.0:
                    gz.div_(t)
                gz = gz.to(w.dtype)
                if need_h:
                    g_h[s:s + chunk] = gz @ w
                if need_w and w.dtype == torch.float32:
                    g_w.addmm_(gz.t(), h.to(w.dtype))
                elif need_w:  # a low-precision product per chunk, summed in fp32
                    g_w += gz.t() @ h.to(w.dtype)
                if g_b is not None:
                    g_b += gz.sum(0)
        g_w = g_w.to(weight.dtype) if g_w is not None else None
        g_b = g_b.to(bias.dtype) if g_b is not None else None
        return g_h, g_w, g_b, None, None, None, None, None
