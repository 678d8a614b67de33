import pytest
import torch

from rlvr.learners.fused_head import fused_head_applies, head_logprobs


def _reference(head, h, y, t):
    """The autograd formulation the learner used before: (N, V) logits, logsumexp and gather."""
    z = head(h).float() / t  # (N, V)
    lse = torch.logsumexp(z, -1)
    return z.gather(-1, y[:, None]).squeeze(1) - lse, lse - (torch.softmax(z, -1) * z).sum(-1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("t", [1.0, 0.7])
def test_chunked_head_gives_the_autograd_logprobs_entropies_and_gradients(bias, t):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=bias)
    h = torch.randn(37, 16, requires_grad=True)  # 37 rows in chunks of 8: the last one short
    y = torch.randint(0, 300, (37,))
    g = torch.randn(37)  # an upstream gradient that differs per token
    lp, ent = _reference(head, h, y, t)
    want = torch.autograd.grad((lp * g).sum(), [h, *head.parameters()])
    lp2, ent2 = head_logprobs(head, h, y, t, chunk=8)
    got = torch.autograd.grad((lp2 * g).sum(), [h, *head.parameters()])
    torch.testing.assert_close(lp2, lp, rtol=0, atol=1e-6)
    torch.testing.assert_close(ent2, ent, rtol=0, atol=1e-6)
    assert not ent2.requires_grad  # a diagnostic: no gradient through it
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _saved_shapes(fn):
    """The shapes of the tensors autograd keeps for the backward of ``fn()``'s outputs."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(tuple(x.shape)) or x, lambda x: x):
        fn()
    return saved


def test_no_logits_are_kept_for_the_backward():
    head = torch.nn.Linear(16, 300, bias=False)
    h = torch.randn(64, 16, requires_grad=True)
    y = torch.randint(0, 300, (64,))
    assert (64, 300) in _saved_shapes(lambda: _reference(head, h, y, 1.0))  # what the hook sees
    # the chunked pass keeps the hidden states, the weight, the targets and a logsumexp per row
    assert sorted(_saved_shapes(lambda: head_logprobs(head, h, y, chunk=16))) == [(64,), (64,), (64, 16), (300, 16)]


def test_under_autocast_the_head_runs_in_the_autocast_dtype_forward_and_backward():
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 200, bias=False)  # fp32 master weights
    h = torch.randn(20, 32, requires_grad=True)
    y = torch.randint(0, 200, (20,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _ = _reference(head, h, y, 1.0)
        lp2, _ = head_logprobs(head, h, y, chunk=8)
    torch.testing.assert_close(lp2, lp, rtol=0, atol=1e-6)  # the same bf16 logits
    want = torch.autograd.grad(lp.sum(), [h, head.weight])
    got = torch.autograd.grad(lp2.sum(), [h, head.weight])
    assert got[1].dtype == torch.float32  # the master weight's gradient
    for a, b in zip(got, want):  # each within bf16 rounding of the other (2^-8 relative)
        assert (a - b).abs().max() <= 8e-3 * b.abs().max()
    fp32 = torch.autograd.grad(_reference(head, h, y, 1.0)[0].sum(), [h, head.weight])
    assert (got[1] - fp32[1]).abs().max() > 0  # bf16 really ran: it differs from the fp32 product


def test_an_empty_selection_a_wrapped_head_and_a_hooked_one():
    head = torch.nn.Linear(8, 50)
    lp, ent = head_logprobs(head, torch.zeros(0, 8, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert lp.shape == ent.shape == (0,)
    assert fused_head_applies(head)

    class Wrapped(torch.nn.Linear):  # e.g. a LoRA layer: its own forward must run
        pass

    assert not fused_head_applies(Wrapped(8, 50))
    assert not fused_head_applies(torch.nn.Sequential(head))
    handle = head.register_forward_hook(lambda m, i, o: o + 1.0)  # a hook that changes the logits
    assert not fused_head_applies(head)
    handle.remove()
    assert fused_head_applies(head)
