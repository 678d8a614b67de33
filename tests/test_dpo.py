import copy
import json
import random

import pytest
import torch

from rlvr.core.config import load_config
from rlvr.learners.dpo import check_pref_config, evaluate, precompute, train_dpo
from rlvr.core.models import build_tiny_model
from rlvr.data.preferences import tokenize_preference_row


def pairs_for(tok, n, seed):
    """Chosen: the prompt's number inside <answer> tags; rejected: a different number, untagged."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        v = rng.randint(10, 99)
        out.append(tokenize_preference_row(
            {"prompt": f"Say {v}:", "chosen": f" <answer>{v}</answer>", "rejected": f" {v + rng.randint(1, 9)}"},
            tok, index=i))
    return out


def cfg_for(loss, *extra):
    return load_config(None, ["--pref.loss", loss, "--pref.batch_size", "16", "--pref.epochs", "4",
                              "--run.steps", "6", "--optim.lr", "3e-3", "--optim.micro_batch_size", "16",
                              *extra])


@pytest.fixture(scope="module")
def setup(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=5)
    return tok, model, pairs_for(tok, 32, seed=0), pairs_for(tok, 16, seed=1)


@pytest.mark.parametrize("loss,extra", [("sigmoid", ()), ("ipo", ()),
                                        ("cdpo", ("--pref.label_smoothing", "0.1")),
                                        ("simpo", ("--pref.beta", "2.0"))])
def test_training_widens_the_chosen_over_rejected_margin(setup, loss, extra):
    tok, base, train, held = setup
    model = copy.deepcopy(base)
    cfg = cfg_for(loss, *extra)
    pad = tok.pad_token_id
    ref_train = None if loss == "simpo" else precompute(model, train, pad, 16)
    ref_held = None if loss == "simpo" else precompute(model, held, pad, 16)
    before = evaluate(model, held, ref_held, cfg.pref, pad, 16)
    if loss != "simpo":  # the policy starts as its own reference: implicit rewards are 0
        assert before["margin"] == pytest.approx(0.0, abs=1e-5)
    stats = train_dpo(model, train, ref_train, cfg, pad)
    after = evaluate(model, held, ref_held, cfg.pref, pad, 16)
    assert stats["steps"] == 6
    assert after["margin"] > before["margin"] + 0.05, (before, after)
    assert after["logp_margin"] > before["logp_margin"], (before, after)
    assert after["accuracy"] >= 0.9, after
    assert after["loss"] < before["loss"]


def test_precomputed_reference_matches_a_live_reference(setup):
    tok, base, train, _ = setup
    cfg = cfg_for("sigmoid", "--run.steps", "2", "--optim.micro_batch_size", "8")
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ref_model = copy.deepcopy(base).eval().requires_grad_(False)
    ref = precompute(ref_model, train, tok.pad_token_id, 8)
    train_dpo(a, train, ref, cfg, tok.pad_token_id)
    train_dpo(b, train, None, cfg, tok.pad_token_id, ref_model=ref_model)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.allclose(x, y, atol=1e-5)


def test_micro_batching_does_not_change_the_update(setup):
    tok, base, train, _ = setup
    ref = precompute(base, train, tok.pad_token_id, 16)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    train_dpo(a, train, ref, cfg_for("sigmoid", "--run.steps", "1", "--optim.micro_batch_size", "16"), tok.pad_token_id)
    train_dpo(b, train, ref, cfg_for("sigmoid", "--run.steps", "1", "--optim.micro_batch_size", "5"), tok.pad_token_id)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.allclose(x, y, atol=1e-5)


def test_config_errors_name_the_field():
    # an enumerated setting is checked where the config is parsed, naming the valid values
    with pytest.raises(ValueError, match=r"--pref.loss robust: Invalid value 'robust', expected one "
                                         r"of \['sigmoid', 'cdpo', 'ipo', 'simpo'\]"):
        load_config(None, ["--pref.loss", "robust"])
    with pytest.raises(ValueError, match="only applies to pref.loss = cdpo"):
        check_pref_config(load_config(None, ["--pref.label_smoothing", "0.1"]).pref)


def test_rlvr_train_dpo_end_to_end(tmp_path, monkeypatch):
    from rlvr.cli import main

    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc = main(["train", "dpo_tiny", "--output-dir", str(out), "--run.progress", "false",
               "--run.steps", "6", "--data.limit", "80", "--model.hidden_size", "32",
               "--model.num_layers", "1"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["eval_margin_before"] == pytest.approx(0.0, abs=1e-5)
    assert report["eval_margin"] > 0.05 and report["eval_accuracy"] >= 0.8, report
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"pref/margin", "pref/chosen_reward", "pref/rejected_reward",
                               "pref/accuracy", "train/loss"} <= set(rows[0])
    assert (out / "final" / "config.json").exists()


def test_named_reference_model_and_live_reference(tmp_path):
    from rlvr.learners.dpo import run
    from rlvr.core.models import save_tiny

    sft_dir = save_tiny(tmp_path / "sft", hidden_size=32, num_layers=1, seed=7)
    cfg = load_config("dpo_tiny", ["--model.name_or_path", str(sft_dir), "--pref.reference_model", str(sft_dir),
                                   "--pref.precompute_ref_logprobs", "false", "--run.steps", "2",
                                   "--data.limit", "24", "--run.progress", "false",
                                   "--run.output_dir", str(tmp_path / "run")])
    report = run(cfg)
    # policy and reference start from the same weights: every implicit reward starts at 0
    assert report["eval_margin_before"] == pytest.approx(0.0, abs=1e-5)
    assert report["train_steps"] == 2
    assert report["eval_margin"] > report["eval_margin_before"]
