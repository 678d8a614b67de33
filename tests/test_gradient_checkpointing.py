"""model.gradient_checkpointing: activations are recomputed in the backward pass (each decoder
layer runs twice per micro-batch) and the gradients are those of the plain model."""

import pytest
import torch

from rlvr.core.registry import ALGORITHMS
from rlvr.learners import common
from rlvr.learners import offline_common as oc
from rlvr.learners.distributed import World
from rlvr.learners.sft import accumulate_gradients

from conftest import mixed_trajectories, tiny_learner_config


def _model(tokenizer):
    from rlvr.core.models import build_tiny_model

    return build_tiny_model(tokenizer, hidden_size=32, num_layers=2, seed=0)


def _layer_calls(model) -> list:
    """One entry per run of the first layer's MLP (its forward, which the recompute calls)."""
    calls, mlp = [], model.model.layers[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *a, **kw: (calls.append(1), forward(*a, **kw))[1]
    return calls


def test_on_policy_gradients_are_unchanged(tmp_path, tiny_tokenizer):
    grads, calls = [], []
    for on in (False, True):
        cfg = tiny_learner_config(tmp_path / str(on), "grpo", steps=1, kl_coef=0.2, entropy_coef=0.01)
        cfg.model.gradient_checkpointing = on
        cfg.optim.micro_batch_size = 3
        cfg.rl.share_prompts = False  # one decoder pass per micro-batch, so the calls count them
        s = common.setup(cfg, _model(tiny_tokenizer), tiny_tokenizer, needs_ref=True)
        batch = common.prepare_batch(s, mixed_trajectories(6), torch.linspace(-1, 1, 6))
        s.model.train()
        n = _layer_calls(s.model)
        common.accumulate_gradients(s, batch, ALGORITHMS.get("grpo"), kl_coef=0.2)
        calls.append(len(n))
        grads.append(torch.cat([p.grad.flatten() for p in s.model.parameters() if p.grad is not None]))
    assert calls == [2, 4]  # two micro-batches; checkpointed, each layer runs again in backward
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_sft_gradients_are_unchanged(tmp_path, tiny_tokenizer):
    grads, calls = [], []
    for on in (False, True):
        cfg = tiny_learner_config(tmp_path / str(on), "grpo", steps=1)
        cfg.model.gradient_checkpointing = on
        model = oc.place(World(), _model(tiny_tokenizer), "cpu", cfg)
        model.train()
        n = _layer_calls(model)
        accumulate_gradients(model, mixed_trajectories(6), tiny_tokenizer.pad_token_id, micro_batch_size=4)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        calls.append(len(n))
    assert calls == [2, 4]  # two micro-batches of 4 and 2; checkpointed, recomputed in backward
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_a_model_without_checkpointing_support_is_refused():
    from rlvr.learners.runtime import activation_checkpointing

    with pytest.raises(ValueError, match="model.gradient_checkpointing: Linear is not a transformers"):
        activation_checkpointing(torch.nn.Linear(2, 2), True)
