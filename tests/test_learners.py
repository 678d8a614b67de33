"""Learners: two steps each on the tiny model, the loss-mask guarantee, normalisation invariance."""

import json

import pytest
import torch

from rlvr.algorithms.grpo import GRPO
from rlvr.algorithms.rloo import RLOO
from rlvr.core.types import Trajectory
from rlvr.learners import common
from rlvr.learners.runtime import lr_schedule

from conftest import mixed_trajectories, tiny_learner_config


def _cfg(tmp_path, algorithm="grpo", **rl):
    return tiny_learner_config(tmp_path, algorithm, steps=2, **rl)


@pytest.fixture()
def fresh_model(tiny_tokenizer):
    from rlvr.core.models import build_tiny_model

    return build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)


@pytest.mark.parametrize("algorithm,rl", [
    ("grpo", dict(kl_coef=0.1, epochs_per_batch=2, mini_batches_per_epoch=2)),
    ("ppo", dict(kl_coef=0.05, kl_in_reward=True, critic="separate", no_eos_penalty=0.5)),
    ("ppo", dict(critic="shared", kl_coef=0.05, kl_target=0.01)),
    ("rloo", dict(kl_coef=0.1, kl_in_reward=True)),
    ("reinforce", dict(baseline="moving-average")),
])
def test_learner_runs_two_steps_and_changes_weights(tmp_path, tiny_tokenizer, fresh_model, algorithm, rl):
    from rlvr.data.tasks import load_tasks
    from rlvr.learners.dispatch import learner_for

    # an entropy bonus guarantees a gradient even when every reward of the random model is 0
    cfg = _cfg(tmp_path, algorithm, entropy_coef=0.01, **rl)
    before = [p.detach().clone() for p in fresh_model.parameters()]
    train = learner_for(algorithm)
    evals = []
    report = train(cfg, model=fresh_model, tokenizer=tiny_tokenizer, tasks=load_tasks("calculator", 8),
                   eval_fn=lambda model, tok: evals.append(1) or {"score": 0.5})
    rows = [json.loads(x) for x in (tmp_path / algorithm / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # optimizer steps per rollout batch are logged: GRPO 2 epochs × 2 mini-batches, others 1
    want_steps = 4 if algorithm == "grpo" else 1
    assert rows[0]["train/optimizer_steps"] == want_steps
    for key in ("reward/mean", "train/entropy", "train/clip_frac", "train/approx_kl", "train/grad_norm",
                "rollout/response_len", "rollout/turns", "rollout/tool_calls", "time/rollout",
                "time/update"):
        assert key in rows[0], key
    if rl.get("kl_coef"):
        assert "train/kl" in rows[0]
    assert rows[-1]["eval/score"] == 0.5 and evals == [1]  # eval at the end (eval_every = 0)
    assert report["eval"] == {"eval/score": 0.5}
    assert any(not torch.equal(a, b) for a, b in zip(before, fresh_model.parameters()))
    assert (tmp_path / algorithm / "checkpoints" / "step_000002" / "state.pt").exists()


def _session(tmp_path, tokenizer, model, **rl):
    cfg = _cfg(tmp_path, "grpo", **rl)
    return common.setup(cfg, model, tokenizer, tasks=None, needs_ref=cfg.rl.kl_coef > 0)


@pytest.mark.parametrize("mask_observations", [True, False])
def test_only_loss_mask_tokens_enter_policy_kl_and_entropy(tmp_path, tiny_tokenizer, fresh_model,
                                                           monkeypatch, mask_observations):
    s = _session(tmp_path, tiny_tokenizer, fresh_model, kl_coef=0.5, entropy_coef=0.1,
                 mask_observations=mask_observations)
    trajs = mixed_trajectories(2)
    batch = common.prepare_batch(s, trajs, torch.tensor([1.0, -1.0]))
    sampled = torch.zeros_like(batch.loss_mask)
    for i, t in enumerate(trajs):
        sampled[i, : len(t)] = torch.tensor(t.loss_mask, dtype=torch.float)
    # make the sampled tokens' behaviour logprobs on-policy (the fixtures' -1.0 / -2.0 would put
    # every ratio outside the clip range, where the surrogate has no gradient at all)
    batch.logprobs = torch.where(sampled > 0, common.forward_logprobs(s, batch), batch.logprobs)
    batch.old_logprobs = batch.logprobs
    captured = {}
    real = common.token_logprobs

    def spy(model, b, temperature, **kw):
        lp, ent = real(model, b, temperature, **kw)
        lp.retain_grad()
        ent.retain_grad()
        captured["lp"], captured["ent"] = lp, ent
        return lp, ent

    monkeypatch.setattr(common, "token_logprobs", spy)
    per_token, _ = common.policy_loss_terms(s, batch, GRPO, kl_coef=0.5)
    common.aggregate(per_token, batch.loss_mask, "token-mean", num_seqs=2,
                     num_tokens=batch.num_tokens, max_len=16).backward()
    observation = batch.attention_mask.bool() & ~sampled.bool()
    observation[:, : int(batch.prompt_lens.max())] = False  # prompt tokens are never trained
    obs_grad = captured["lp"].grad[observation].abs().sum() + captured["ent"].grad[observation].abs().sum()
    assert captured["lp"].grad[sampled.bool()].abs().min() > 0  # every sampled token is trained
    if mask_observations:
        assert obs_grad == 0  # policy, KL and entropy terms ignore observation tokens
        prompt = ~batch.loss_mask.bool()
        assert captured["lp"].grad[prompt].abs().sum() == 0
    else:
        assert obs_grad > 0  # --no-mask trains them
        # their old logprobs were filled from the policy, so the ratio starts at 1 there
        assert torch.allclose(batch.logprobs[observation], captured["lp"].detach()[observation], atol=1e-5)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_one_batch_of_8_equals_two_micro_batches_of_4(tmp_path, tiny_tokenizer, fresh_model, agg):
    s = _session(tmp_path, tiny_tokenizer, fresh_model, kl_coef=0.2, entropy_coef=0.01, loss_agg=agg)
    trajs = mixed_trajectories(8)
    adv = torch.linspace(-1, 1, 8)
    batch = common.prepare_batch(s, trajs, adv)
    grads = []
    for micro in (8, 4):
        s.cfg.optim.micro_batch_size = micro
        s.model.zero_grad(set_to_none=True)
        common.accumulate_gradients(s, batch, GRPO, kl_coef=0.2)
        grads.append(torch.cat([p.grad.flatten() for p in s.model.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_length_buckets_give_the_same_gradient_with_less_padding(tmp_path, tiny_tokenizer, fresh_model,
                                                                 monkeypatch):
    s = _session(tmp_path, tiny_tokenizer, fresh_model, kl_coef=0.2, entropy_coef=0.01)
    trajs = mixed_trajectories(8)  # lengths 6, 8, 10, 6, 8, 10, 6, 8 (62 tokens)
    padding, real = [], common.token_logprobs

    def spy(model, b, temperature, **kw):
        padding.append(b.padded_tokens)
        return real(model, b, temperature, **kw)

    monkeypatch.setattr(common, "token_logprobs", spy)
    s.cfg.optim.micro_batch_size = 3
    grads, ref, pad = [], [], []
    for buckets in (False, True):
        s.cfg.optim.length_buckets = buckets
        batch = common.prepare_batch(s, trajs, torch.linspace(-1, 1, 8))  # reference logprobs
        ref.append(batch.ref_logprobs)
        padding.clear()
        s.model.zero_grad(set_to_none=True)
        common.accumulate_gradients(s, batch, GRPO, kl_coef=0.2)
        grads.append(torch.cat([p.grad.flatten() for p in s.model.parameters()]))
        pad.append(sum(padding))
    # in row order: [6, 8, 10] [6, 8, 10] [6, 8] pad (4 + 2) + (4 + 2) + 2 = 14; by length:
    # [10, 10, 8] [8, 8, 6] [6, 6] pad 2 + 2 + 0 = 4
    assert pad == [14, 4]
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ref[0], ref[1], rtol=0, atol=1e-5)  # rows back in batch order
    assert ref[0].abs().sum() > 0


def test_engine_logprobs_match_the_learner_so_the_first_ratio_is_one(tmp_path, tiny_tokenizer, fresh_model):
    s = _session(tmp_path, tiny_tokenizer, fresh_model)
    trajs, _ = common.rollout(s, step=1)
    batch = common.prepare_batch(s, trajs)
    m = batch.loss_mask.bool()
    assert m.any()
    recomputed = common.forward_logprobs(s, batch)
    torch.testing.assert_close(recomputed[m], batch.logprobs[m], rtol=0, atol=1e-4)


def test_lora_reference_is_the_adapter_disabled_base(tmp_path, tiny_tokenizer, fresh_model):
    pytest.importorskip("peft")
    cfg = _cfg(tmp_path, "grpo", kl_coef=0.1, entropy_coef=0.1)
    cfg.model.lora_rank = 4
    cfg.optim.lr = 0.05
    s = common.setup(cfg, fresh_model, tiny_tokenizer, needs_ref=True)
    assert s.ref_model == "adapter-disabled"  # no copy of the model is kept
    batch = common.prepare_batch(s, mixed_trajectories(4), torch.tensor([1.0, -1.0, 0.5, -0.5]))
    m = batch.loss_mask.bool()
    # LoRA's B matrices start at 0: policy and reference agree before training
    torch.testing.assert_close(common.forward_logprobs(s, batch)[m], batch.ref_logprobs[m])
    common.update_policy(s, batch, GRPO, kl_coef=0.1)
    after = common.forward_logprobs(s, batch)
    ref_after = common.forward_logprobs(s, batch, reference=True)
    torch.testing.assert_close(ref_after[m], batch.ref_logprobs[m])  # the base did not move
    assert (after[m] - ref_after[m]).abs().max() > 1e-4  # the adapter did


def test_failed_episode_without_tokens_does_not_break_the_batch(tmp_path, tiny_tokenizer, fresh_model):
    s = _session(tmp_path, tiny_tokenizer, fresh_model)
    empty = Trajectory.from_prompt([], group_id="g0")  # what rollout records when reset raises
    empty.error = "reset failed: boom"
    trajs = [empty] + mixed_trajectories(1)
    batch = common.prepare_batch(s, trajs, torch.tensor([1.0, -1.0]))
    assert len(batch) == 2 and batch.loss_mask[0].sum() == 0
    stats = common.update_policy(s, batch, RLOO)
    assert stats["train/optimizer_steps"] == 1 and torch.isfinite(torch.tensor(stats["train/loss"]))


def test_warmup_then_linear_decay(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.optim.warmup_steps, cfg.optim.schedule, cfg.optim.lr = 2, "linear", 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_schedule(opt, cfg.optim, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # warm-up (i+1)/2: 0.5, 1.0; then 1 - (i-2)/4: 1.0, 0.75, 0.5, 0.25
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_shared_prompt_passes_give_the_same_gradient(tmp_path, tiny_tokenizer, fresh_model, monkeypatch):
    import rlvr.learners.batch as batch_mod

    s = _session(tmp_path, tiny_tokenizer, fresh_model, kl_coef=0.2, entropy_coef=0.01)
    s.cfg.optim.micro_batch_size = 8
    trajs = mixed_trajectories(8)  # prompts [5], [5, 6], [5, 6, 7] in turn: 3 distinct in 8 rows
    runs, real = [], batch_mod.shared_prompt_hidden
    monkeypatch.setattr(batch_mod, "shared_prompt_hidden", lambda *a: (runs.append(len(a[2])), real(*a))[1])
    grads, ref = [], []
    for share in (False, True):
        s.cfg.rl.share_prompts = share
        runs.clear()
        batch = common.prepare_batch(s, trajs, torch.linspace(-1, 1, 8))  # the reference's pass too
        ref.append(batch.ref_logprobs)
        s.model.zero_grad(set_to_none=True)
        common.accumulate_gradients(s, batch, GRPO, kl_coef=0.2)
        grads.append(torch.cat([p.grad.flatten() for p in s.model.parameters()]))
        assert runs == ([3, 3] if share else [])  # the reference's pass and the update's
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(ref[1], ref[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
