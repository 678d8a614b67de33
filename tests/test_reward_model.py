import json
import random
from types import SimpleNamespace

import pytest
import torch

from rlvr.core.config import load_config
from rlvr.learners.rm import evaluate_pairs, train_reward_model
from rlvr.data.preferences import tokenize_preference_row
from rlvr.rewards.reward_model import META_FILE, load_reward_model, save_reward_model, score_ids, score_texts
from rlvr.rewards.spec import add_model_rewards
from rlvr.core.types import Trajectory


def tiny_rm(tok, seed=0):
    from transformers import LlamaForSequenceClassification

    from rlvr.core.models import build_tiny_model

    config = build_tiny_model(tok, hidden_size=32, num_layers=1).config
    config.num_labels = 1
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config)


GOOD = ["great", "thanks", "clear", "correct", "helpful", "precise"]
BAD = ["wrong", "rude", "vague", "useless", "broken", "noisy"]


def synthetic_pairs(tok, n, seed):
    """Chosen replies use words from GOOD, rejected ones from BAD; lengths and order random."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = f"Review {rng.randint(0, 999)}:"
        good = " ".join(rng.choice(GOOD) for _ in range(rng.randint(1, 4)))
        bad = " ".join(rng.choice(BAD) for _ in range(rng.randint(1, 4)))
        out.append(tokenize_preference_row({"prompt": prompt, "chosen": " " + good, "rejected": " " + bad},
                                           tok, index=i))
    return out


def test_score_is_read_at_the_last_real_token(tiny_tokenizer):
    tok = tiny_tokenizer
    rm = tiny_rm(tok).eval()
    a, b = [5, 6, 7, 8, 9], [10, 11]
    with torch.no_grad():
        alone = score_ids(rm, [b], tok.pad_token_id)
        padded = score_ids(rm, [a, b], tok.pad_token_id)  # b right-padded by 3
        # a sequence that itself ends in the pad id (pad == EOS in many hub models) is read at
        # that final token, not before it
        ends_in_pad = score_ids(rm, [b + [tok.pad_token_id]], tok.pad_token_id)
    assert torch.allclose(alone, padded[1:], atol=1e-5)
    assert not torch.allclose(alone, ends_in_pad, atol=1e-4)


def test_bradley_terry_training_beats_chance(tiny_tokenizer):
    tok = tiny_tokenizer
    rm = tiny_rm(tok, seed=1)
    train, held = synthetic_pairs(tok, 64, seed=0), synthetic_pairs(tok, 40, seed=1)
    cfg = load_config(None, ["--pref.batch_size", "16", "--pref.epochs", "3", "--run.steps", "12",
                             "--optim.lr", "3e-3", "--optim.micro_batch_size", "16"])
    stats = train_reward_model(rm, tok, train, cfg)
    after = evaluate_pairs(rm, tok, held)
    assert stats["steps"] == 12
    assert stats["loss_last"] < stats["loss_first"]
    assert after["accuracy"] >= 0.9, after  # chance is 0.5
    assert after["margin"] > 0


def test_save_load_round_trip_and_model_rewards(tiny_tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    tok = tiny_tokenizer
    rm = tiny_rm(tok, seed=3).eval()
    path = save_reward_model(rm, tok, tmp_path / "rm", {"reference_mean": 0.25})
    assert json.loads((path / META_FILE).read_text())["reference_mean"] == 0.25
    again = AutoModelForSequenceClassification.from_pretrained(path)  # loads like any HF model
    texts = ["Q: hi", "Q: hi A: thanks"]
    raw = score_texts(rm, tok, texts)
    assert score_texts(again, tok, texts) == pytest.approx(raw, abs=1e-5)

    trajs = [Trajectory.from_prompt([5, 6]) for _ in texts]
    trajs[0].reward, trajs[1].reward = 1.0, 0.0
    cfg = load_config(None, ["--rl.reward_model", str(path), "--rl.reward_model_weight", "2.0",
                             "--run.device", "cpu"])
    add_model_rewards(trajs, ["Q: hi", "Q: hi"], ["", " A: thanks"], cfg)
    for t, r, base in zip(trajs, raw, [1.0, 0.0]):
        # reward = verifier reward + weight × (raw − reference mean)
        assert t.reward_parts["model:rm"] == pytest.approx(r - 0.25, abs=1e-5)
        assert t.reward == pytest.approx(base + 2.0 * (r - 0.25), abs=1e-5)

    off = [Trajectory.from_prompt([5])]
    add_model_rewards(off, ["x"], ["y"], load_config(None))  # no reward model: untouched
    assert off[0].reward == 0.0 and off[0].reward_parts == {}


def test_missing_reference_mean_uses_the_first_batch(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    rm = tiny_rm(tok, seed=4).eval()
    path = save_reward_model(rm, tok, tmp_path / "rm", {})
    cfg = load_config(None, ["--rl.reward_model", str(path), "--run.device", "cpu"])
    trajs = [Trajectory.from_prompt([5]) for _ in range(3)]
    add_model_rewards(trajs, ["a", "b", "c"], ["1", "22", "333"], cfg)
    # normalised by the batch's own mean, so the parts sum to 0
    assert sum(t.reward_parts["model:rm"] for t in trajs) == pytest.approx(0.0, abs=1e-5)


def test_unknown_reward_model_path_is_a_clear_error(tmp_path):
    cfg = load_config(None, ["--rl.reward_model", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match=r"^rl\.reward_model: .*nope' does not exist"):
        add_model_rewards([Trajectory.from_prompt([5])], ["a"], ["b"], cfg)


TINY = ["--model.hidden_size", "32", "--model.num_layers", "1", "--run.progress", "false"]


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    """`rlvr train rm_tiny`, once for the module (tests/test_rlhf.py runs the sft → rm → ppo chain)."""
    import os

    from rlvr.cli import main

    tmp = tmp_path_factory.mktemp("rm")
    old = os.environ.get("RLVR_CACHE")
    os.environ["RLVR_CACHE"] = str(tmp / "cache")
    try:
        rc = main(["train", "rm_tiny", "--output-dir", str(tmp / "run"), "--run.steps", "8",
                   "--data.limit", "100", "--pref.batch_size", "12", *TINY])
    finally:
        if old is None:
            os.environ.pop("RLVR_CACHE", None)
        else:
            os.environ["RLVR_CACHE"] = old
    assert rc == 0
    return tmp


def test_rlvr_train_rm_end_to_end(rm_run):
    out = rm_run / "run"
    report = json.loads((out / "report.json").read_text())
    assert report["train_steps"] == 8
    assert report["eval_accuracy"] >= 0.8, report  # held-out pairs; chance is 0.5
    model, _, meta = load_reward_model(out / "final", "cpu")
    assert meta["reference_mean"] == pytest.approx(report["reference_mean"])
