"""Record the gradient of every optimizer step: ``torch.nn.utils.clip_grad_norm_`` (which every
learner calls once per step, after the ranks' all-reduce) is wrapped to copy the gradients first."""

from contextlib import contextmanager

import torch


@contextmanager
def record_gradients():
    """``with record_gradients() as grads: ...`` — ``grads`` gets one flat tensor per step."""
    grads: list[torch.Tensor] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, *a, **kw):
        params = list(params)
        full = [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad  # FSDP2 shards
                for p in params if p.grad is not None]
        grads.append(torch.cat([g.flatten() for g in full]).clone())
        return real(params, *a, **kw)

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        yield grads
    finally:
        torch.nn.utils.clip_grad_norm_ = real
