import json

import pytest
import torch

from rlvr.core.config import load_config
from rlvr.core.models import build_tiny_model
from rlvr.core.types import Trajectory
from rlvr.learners.batch import collate, token_logprobs
from rlvr.learners.sft import accumulate_gradients, nll_of, train_on_trajectories


def search_demo(tok, question: str, query: str, passage: str, answer: str) -> Trajectory:
    """A multi-turn search demonstration: the retrieved text is an observation (loss_mask 0)."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    t = Trajectory.from_prompt(enc(f"Question: {question}\n"), task_id=question)
    a1 = enc(f"<search> {query} </search>")
    t.append_sampled(a1, [0.0] * len(a1))
    t.append_observation(enc(f"<information> {passage} </information>"))
    a2 = enc(f"<answer> {answer} </answer>") + [tok.eos_token_id]
    t.append_sampled(a2, [0.0] * len(a2))
    return t


def demos(tok, n=8):
    return [search_demo(tok, f"Where was author {i} born?", f"author {i}", f"Doc {i}: born in Paris {i}",
                        f"Paris {i}") for i in range(n)]


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def test_loss_is_token_mean_over_trained_tokens_only(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=1)
    batch = demos(tok, 3)
    loss = accumulate_gradients(model, batch, tok.pad_token_id, micro_batch_size=2)
    # by hand: -Σ logp over loss_mask tokens of all three / their count
    with torch.no_grad():
        b = collate(batch, tok.pad_token_id)
        lp, _ = token_logprobs(model, b, with_entropy=False)
        expected = float(-(lp * b.loss_mask).sum() / b.loss_mask.sum())
    assert loss == pytest.approx(expected, rel=1e-5)


def test_observation_tokens_do_not_reach_the_gradient(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=1)
    a = demos(tok, 1)[0]
    # b differs from a only in tokens after the last trained one, all with loss_mask 0
    b = Trajectory(list(a.token_ids), list(a.loss_mask), list(a.logprobs), a.prompt_len)
    b.append_observation(tok.encode("<information> unrelated text </information>", add_special_tokens=False))
    accumulate_gradients(model, [a], tok.pad_token_id, 1)
    ga = grads(model)
    model.zero_grad()
    accumulate_gradients(model, [b], tok.pad_token_id, 1)
    for x, y in zip(ga, grads(model)):
        assert torch.allclose(x, y, atol=1e-6)


def test_micro_batches_give_the_same_gradient(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=1)
    batch = demos(tok, 8)
    accumulate_gradients(model, batch, tok.pad_token_id, micro_batch_size=8)
    one = grads(model)
    model.zero_grad()
    accumulate_gradients(model, batch, tok.pad_token_id, micro_batch_size=4)
    for x, y in zip(one, grads(model)):
        assert torch.allclose(x, y, atol=1e-6)


def test_length_buckets_give_the_same_gradient(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=1)
    batch = [search_demo(tok, f"Where was author {i} born?", f"author {i}", "Doc: " + "far " * (i * 3),
                         f"Paris {i}") for i in range(8)]  # passages of 0 to 21 extra words
    assert len({len(t) for t in batch}) == 8
    out = []
    for by_length in (False, True):
        model.zero_grad()
        out.append(accumulate_gradients(model, batch, tok.pad_token_id, 3, by_length=by_length))
        out.append(grads(model))
    assert out[0] == pytest.approx(out[2], rel=1e-5)  # the same loss
    assert sum(float(g.abs().sum()) for g in out[1]) > 0
    for x, y in zip(out[1], out[3]):
        assert torch.allclose(x, y, atol=1e-6)


def test_train_on_trajectories_learns_the_demonstrations(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=2)
    data = demos(tok, 4)
    cfg = load_config(None, ["--pref.batch_size", "4", "--pref.epochs", "12", "--run.steps", "12",
                             "--optim.lr", "1e-2", "--optim.micro_batch_size", "4"])
    before = nll_of(model, data, tok.pad_token_id)
    stats = train_on_trajectories(model, tok, data, cfg)
    after = nll_of(model, data, tok.pad_token_id)
    assert stats["steps"] == 12
    assert after < 0.5 * before, (before, after)  # starts near ln(vocab) ≈ 6.3; must fall below half
    assert stats["loss_last"] < stats["loss_first"]


def test_train_on_trajectories_rejects_untrainable_data(tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, hidden_size=32, num_layers=1)
    t = Trajectory.from_prompt([5, 6, 7])
    with pytest.raises(ValueError, match="no trajectory with a trained token"):
        train_on_trajectories(model, tok, [t], load_config(None))


def test_rlvr_train_sft_end_to_end(tmp_path, monkeypatch):
    from rlvr.cli import main

    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc = main(["train", "sft_tiny", "--output-dir", str(out), "--run.steps", "6",
               "--run.progress", "false", "--data.limit", "64",
               "--model.hidden_size", "32", "--model.num_layers", "1"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train_steps"] == 6
    assert report["eval_nll_after"] < report["eval_nll_before"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and "train/loss" in json.loads(lines[0])
    assert (out / "config.yaml").exists() and (out / "final" / "config.json").exists()
