"""Learner options through the real learner loops: dynamic sampling, PPO's no-EOS penalty and
reward whitening, bf16 training, and the loss-mask guarantee in PPO, RLOO and REINFORCE.

Most tests replace ``common.rollout`` with hand-built trajectories, so rewards, finish reasons and
masked tokens are exactly known; everything after the rollout is the learners' own code.
"""

import json
import math

import pytest
import torch

from rlvr.learners.dispatch import learner_for
from rlvr.core.types import Task, Trajectory
from rlvr.learners import common
from rlvr.learners.batch import collate
from rlvr.learners.critic import ValueModel

from conftest import tiny_learner_config

TASKS = [Task("1 + 1", ["2"], id="unused")]  # the prompt stream's; the fake rollout ignores it


def _cfg(tmp_path, algorithm, *, prompts=2, steps=1, **rl):
    return tiny_learner_config(tmp_path, algorithm, prompts=prompts, steps=steps, **rl)


def _model(tokenizer):
    from rlvr.core.models import build_tiny_model

    return build_tiny_model(tokenizer, hidden_size=32, num_layers=1, seed=0)


def _learner(algorithm):
    return learner_for(algorithm)


def _traj(i, sampled, *, reward, finish="eos", group=None):
    t = Trajectory.from_prompt([5, 6], group_id=group or f"g{i // 2}", task_id=f"t{i}")
    t.append_sampled(sampled, [-1.0] * len(sampled))
    t.reward, t.finish_reason = reward, finish
    t.truncated = finish not in ("eos", "done")
    return t


def _fake_rollout(monkeypatch, make):
    """``common.rollout`` → ``make()``'s trajectories; the sampled tokens' behaviour logprobs are
    set to the current policy's (on-policy, so the first PPO ratio is 1 and nothing is clipped)."""
    def rollout(s, step):
        trajs = make()
        lp = common.forward_logprobs(s, collate(trajs, s.tokenizer.pad_token_id))  # (N, T)
        for i, t in enumerate(trajs):
            t.logprobs = [float(lp[i, j]) if m else x
                          for j, (x, m) in enumerate(zip(t.logprobs, t.loss_mask))]
        return trajs, {"time/rollout": 0.0}

    monkeypatch.setattr(common, "rollout", rollout)


def _rows(cfg):
    path = f"{cfg.run.output_dir}/metrics.jsonl"
    return [json.loads(x) for x in open(path).read().splitlines()]


# -- rl.filter_zero_variance (DAPO's dynamic sampling) ------------------------------------------

@pytest.mark.parametrize("filter_zero_variance", [True, False])
def test_zero_variance_groups_are_dropped_and_counted(tmp_path, tiny_tokenizer, monkeypatch,
                                                       filter_zero_variance):
    # groups of 2: g0 rewards [1, 1] (flat), g1 [1, 0], g2 [0, 0] (flat)
    rewards = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    _fake_rollout(monkeypatch, lambda: [_traj(i, [10 + i, 11], reward=r) for i, r in enumerate(rewards)])
    seen = {}
    real_prepare, real_update = common.prepare_batch, common.update_policy

    def spy_prepare(s, trajs, advantages=None):
        seen["tasks"] = [t.task_id for t in trajs]
        return real_prepare(s, trajs, advantages)

    def spy_update(s, batch, algo, **kw):
        m = batch.loss_mask > 0
        seen["adv"] = torch.tensor([float(row[mask][0]) for row, mask in zip(batch.advantages, m)])
        return real_update(s, batch, algo, **kw)

    monkeypatch.setattr(common, "prepare_batch", spy_prepare)
    monkeypatch.setattr(common, "update_policy", spy_update)
    cfg = _cfg(tmp_path, "grpo", prompts=3, filter_zero_variance=filter_zero_variance, entropy_coef=0.01)
    _learner("grpo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer, tasks=TASKS)
    [row] = _rows(cfg)
    # g1 = [1, 0]: mean 0.5, unbiased std sqrt(((0.5)² + (0.5)²) / 1) = sqrt(0.5); A = ±0.5 / sqrt(0.5)
    a = 0.5 / math.sqrt(0.5)  # = 0.7071
    if filter_zero_variance:
        assert seen["tasks"] == ["t2", "t3"]  # only g1 reaches the update
        assert seen["adv"].tolist() == pytest.approx([a, -a], abs=1e-5)
        assert row["train/trajectories_used"] == 2 and row["train/groups_dropped"] == 2
    else:
        assert seen["tasks"] == ["t0", "t1", "t2", "t3", "t4", "t5"]
        assert seen["adv"].tolist() == pytest.approx([0, 0, a, -a, 0, 0], abs=1e-5)
        assert row["train/trajectories_used"] == 6 and row["train/groups_dropped"] == 0
    assert row["rollout/zero_variance_groups"] == pytest.approx(2 / 3)  # logged either way
    assert row["train/optimizer_steps"] == 1


def test_all_groups_flat_means_no_update(tmp_path, tiny_tokenizer, monkeypatch):
    _fake_rollout(monkeypatch, lambda: [_traj(i, [10 + i, 11], reward=1.0) for i in range(4)])
    model = _model(tiny_tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    # an entropy bonus would move the weights if any trajectory reached the update
    cfg = _cfg(tmp_path, "grpo", filter_zero_variance=True, entropy_coef=0.1)
    _learner("grpo")(cfg, model=model, tokenizer=tiny_tokenizer, tasks=TASKS)
    [row] = _rows(cfg)
    assert row["train/optimizer_steps"] == 0 and row["train/trajectories_used"] == 0
    assert row["train/groups_dropped"] == 2 and row["rollout/zero_variance_groups"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# -- PPO: rl.no_eos_penalty and rl.whiten_rewards ------------------------------------------------

R3 = math.sqrt(3)


@pytest.mark.parametrize("penalty,whiten_rewards,last_token_rewards,other_rewards", [
    # outcomes r - penalty·(no EOS): A 1 - 0, B 0 - 1, C 0 - 0 (done counts as an end), D 1 - 1
    (1.0, False, [1.0, -1.0, 0.0, 0.0], 0.0),
    # whitened over the 8 trained tokens (shift_mean=False): mean (1 - 1) / 8 = 0,
    # var (1² + 1²) / 8 = 0.25, std 0.5 → last tokens x / 0.5, the others stay 0
    (1.0, True, [2.0, -2.0, 0.0, 0.0], 0.0),
    # no penalty: truncation costs nothing
    (0.0, False, [1.0, 0.0, 0.0, 1.0], 0.0),
    # whitened: mean 2 / 8 = 0.25, var (2·0.75² + 6·0.25²) / 8 = 0.1875, std sqrt(3) / 4;
    # (x - 0.25) / std + 0.25: 1 → sqrt(3) + 0.25, 0 → -1 / sqrt(3) + 0.25
    (0.0, True, [R3 + 0.25, -1 / R3 + 0.25, -1 / R3 + 0.25, R3 + 0.25], -1 / R3 + 0.25),
])
def test_ppo_no_eos_penalty_and_reward_whitening(tmp_path, tiny_tokenizer, monkeypatch, penalty,
                                                  whiten_rewards, last_token_rewards, other_rewards):
    from rlvr.algorithms import ppo

    def make():
        return [_traj(0, [10, 11], reward=1.0, finish="eos"),
                _traj(1, [12, 13], reward=0.0, finish="max_new_tokens"),
                _traj(2, [14, 15], reward=0.0, finish="done"),
                _traj(3, [16, 17], reward=1.0, finish="max_turns")]

    _fake_rollout(monkeypatch, make)
    seen = {}
    real_gae = ppo.gae

    def spy(rewards, values, loss_mask, gamma, lam):
        seen["rewards"], seen["mask"] = rewards.clone(), loss_mask.clone()
        return real_gae(rewards, values, loss_mask, gamma, lam)

    monkeypatch.setattr(ppo, "gae", spy)
    cfg = _cfg(tmp_path, "ppo", no_eos_penalty=penalty, whiten_rewards=whiten_rewards)
    _learner("ppo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer, tasks=TASKS)
    r = seen["rewards"]  # (4, 4): prompt [5, 6] at 0-1, sampled tokens at 2-3
    assert seen["mask"][:, 2:].eq(1).all() and seen["mask"][:, :2].eq(0).all()
    assert r[:, 3].tolist() == pytest.approx(last_token_rewards, abs=1e-5)
    assert r[:, 2].tolist() == pytest.approx([other_rewards] * 4, abs=1e-5)
    assert r[:, :2].abs().sum() == 0  # prompt tokens get no reward
    [row] = _rows(cfg)
    assert row["train/no_eos_share"] == 0.5  # B and D ended without EOS or done


# -- precision -----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm,rl", [("grpo", {}), ("ppo", dict(critic="separate"))])
def test_bf16_training_on_cpu(tmp_path, tiny_tokenizer, monkeypatch, algorithm, rl):
    """``model.dtype = bfloat16`` is mixed precision: the weights AdamW updates stay float32
    (master weights), a step changes them and every loss stays finite."""
    import rlvr.learners.common
    from rlvr.data.tasks import load_tasks

    loaded = {}
    real_load = rlvr.learners.common.load_policy

    def spy(model_cfg, device=None):
        model, tok = real_load(model_cfg, device)
        loaded["model"], loaded["before"] = model, [p.detach().clone() for p in model.parameters()]
        return model, tok

    monkeypatch.setattr(rlvr.learners.common, "load_policy", spy)  # the learner's setup loads
    cfg = _cfg(tmp_path, algorithm, entropy_coef=0.01, **rl)
    cfg.model.name_or_path, cfg.model.dtype = "tiny", "bfloat16"
    cfg.model.hidden_size, cfg.model.num_layers = 32, 1
    report = _learner(algorithm)(cfg, tasks=load_tasks("calculator", 4))
    model = loaded["model"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights
    assert any(not torch.equal(a, b) for a, b in zip(loaded["before"], model.parameters()))
    final = report["final"]
    assert final["train/optimizer_steps"] == 1  # a non-finite gradient would have skipped it
    losses = ("train/loss", "train/grad_norm", "train/entropy")
    for key in losses + (("train/value_loss",) if algorithm == "ppo" else ()):
        assert math.isfinite(final[key]), key
    assert final["train/grad_norm"] > 0


# -- only loss_mask = 1 tokens are trained, in every on-policy learner ---------------------------

def _masked_trajectories(trailing, masked_logprob):
    """Per trajectory: prompt, sampled, observation, sampled, then a trailing observation after
    the last sampled token (a causal model's loss on earlier tokens cannot see it). Masked tokens'
    recorded logprobs are ``masked_logprob``. Rewards [0, 1] per group."""
    out = []
    for i in range(4):
        t = Trajectory.from_prompt([5, 6, 7][: 1 + i % 3], group_id=f"g{i // 2}")
        t.append_sampled([10 + i, 11][: 1 + i % 2], [0.0] * (1 + i % 2))
        t.append_observation([20, 21 + i])
        t.append_sampled([30, 31 + i], [0.0, 0.0])
        t.append_observation([trailing + i, trailing])
        t.logprobs = [x if m else masked_logprob for x, m in zip(t.logprobs, t.loss_mask)]
        t.reward, t.finish_reason, t.truncated = float(i % 2), "max_turns", True
        out.append(t)
    return out


_CLIP_GRAD_NORM = torch.nn.utils.clip_grad_norm_


def _NonZeroHead(body):
    """PPO's critic with a fixed non-zero value head: the real head starts at 0, where a value
    loss on masked tokens would have no gradient either and a leak could not show."""
    critic = ValueModel(body)
    with torch.no_grad():
        w = critic.head.weight
        w.copy_(torch.linspace(-1.0, 1.0, w.numel()).view_as(w))
        critic.head.bias.fill_(0.1)
    return critic


def _gradients(tmp_path, tokenizer, monkeypatch, algorithm, rl, trailing, masked_logprob, tag):
    """Raw gradients (before clipping) of every optimizer step of one learner step: the policy's,
    and the separate critic's for PPO."""
    grads = []

    def spy(params, *a, **kw):
        params = list(params)
        grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]).clone())
        return _CLIP_GRAD_NORM(params, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    _fake_rollout(monkeypatch, lambda: _masked_trajectories(trailing, masked_logprob))
    if algorithm == "ppo":
        from rlvr.learners import critic, onpolicy

        monkeypatch.setattr(critic, "ValueModel", _NonZeroHead)
        monkeypatch.setattr(onpolicy, "ValueModel", _NonZeroHead)
    cfg = _cfg(tmp_path / tag, algorithm, **rl)
    _learner(algorithm)(cfg, model=_model(tokenizer), tokenizer=tokenizer, tasks=TASKS)
    return grads


@pytest.mark.parametrize("algorithm,rl", [
    ("ppo", dict(critic="separate", kl_coef=0.3, kl_in_reward=True, whiten_rewards=True)),
    ("ppo", dict(critic="shared", kl_coef=0.3)),  # KL as a loss term, value loss in the policy's
    ("rloo", dict(kl_coef=0.3, kl_in_reward=True)),
    ("reinforce", dict(kl_coef=0.3)),
    ("grpo", dict(kl_coef=0.3)),
])
def test_masked_tokens_do_not_change_any_gradient(tmp_path, tiny_tokenizer, monkeypatch, algorithm, rl):
    rl = dict(entropy_coef=0.1, **rl)  # policy, KL, entropy (and value) terms all present
    base = _gradients(tmp_path, tiny_tokenizer, monkeypatch, algorithm, rl, 40, 0.0, "base")
    # other trailing observation tokens and other recorded logprobs on every masked token
    changed = _gradients(tmp_path, tiny_tokenizer, monkeypatch, algorithm, rl, 90, -7.5, "changed")
    assert len(base) == len(changed) == (2 if rl.get("critic") == "separate" else 1)
    for g0, g1 in zip(base, changed):
        assert g0.abs().sum() > 0
        torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-7)
    # the control: under --no-mask the same change does reach the gradient, so the check above
    # would catch a masked token leaking into any term
    no_mask = dict(rl, mask_observations=False)
    base = _gradients(tmp_path, tiny_tokenizer, monkeypatch, algorithm, no_mask, 40, 0.0, "nm_base")
    changed = _gradients(tmp_path, tiny_tokenizer, monkeypatch, algorithm, no_mask, 90, -7.5, "nm_changed")
    assert not torch.allclose(base[0], changed[0], rtol=1e-5, atol=1e-7)
