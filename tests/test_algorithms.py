"""The on-policy algorithms and the one loop: hand-computed losses and advantages of GSPO, CISPO,
REINFORCE++, DAPO's overlong shaping and the mismatch weights; settings honoured the same way by
every algorithm or refused; groups from ``group_id``; dynamic sampling with re-draws; mixed
precision that keeps small updates."""

import math

import pytest
import torch
from helpers.grads import record_gradients

from rlvr.algorithms.advantages import overlong_penalty, reinforce_pp_advantages
from rlvr.algorithms.base import resolve_settings
from rlvr.algorithms.losses import aggregate, cispo_policy_loss, gspo_policy_loss, mismatch_weights
from rlvr.core.registry import ALGORITHMS
from rlvr.core.types import Task, Trajectory
from rlvr.learners import common, onpolicy
from rlvr.learners.batch import collate
from rlvr.learners.dispatch import learner_for

from conftest import tiny_learner_config

ON_POLICY = ["grpo", "dapo", "gspo", "cispo", "rloo", "reinforce", "reinforce_pp", "ppo"]
TASKS = [Task("1 + 1", ["2"], id="unused")]


# -- pure functions, by hand ---------------------------------------------------------------------

def test_gspo_ratio_is_the_length_normalised_sequence_ratio_clipped_as_a_whole():
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    old = torch.tensor([[0.0, -1.0, -2.0]])
    lp = (old + torch.tensor([[0.0, 0.2, 0.0]])).requires_grad_()
    # log s = (0.2 + 0.0) / 2 = 0.1, s = e^0.1 = 1.10517; A = 1, clip_high 0.05 → 1.05 wins the min
    loss, clipped = gspo_policy_loss(lp, old, torch.ones(1, 3), mask, 0.05, 0.05)
    assert loss[0, 1:].tolist() == pytest.approx([-1.05, -1.05])
    assert clipped[0, 1:].all()
    aggregate(loss, mask, "seq-mean-token-mean", num_seqs=1, num_tokens=2, max_len=3).backward()
    assert lp.grad.abs().sum() == 0  # the whole sequence is clipped: no token moves
    # A = -1: -min(-1.10517, -1.05) = 1.10517 on each token, unclipped
    lp.grad = None
    loss, clipped = gspo_policy_loss(lp, old, -torch.ones(1, 3), mask, 0.05, 0.05)
    assert loss[0, 1:].tolist() == pytest.approx([math.exp(0.1)] * 2, rel=1e-6) and not clipped.any()
    aggregate(loss, mask, "seq-mean-token-mean", num_seqs=1, num_tokens=2, max_len=3).backward()
    # the paper's sequence objective L = -A s, dL/dlp_t = -A s / |y| = 1.10517 / 2 per trained token
    assert lp.grad[0].tolist() == pytest.approx([0.0, math.exp(0.1) / 2, math.exp(0.1) / 2], rel=1e-5)


def test_cispo_bounds_the_weight_but_keeps_every_gradient():
    lp = torch.tensor([[math.log(0.6), math.log(0.6)]], requires_grad=True)
    old = torch.tensor([[math.log(0.4), math.log(1.2)]])  # ratios 1.5 and 0.5
    adv = torch.tensor([[2.0, 2.0]])
    loss, clipped = cispo_policy_loss(lp, old, adv, clip_low=1.0, clip_high=0.28)
    # token 0: w = clip(1.5, 0, 1.28) = 1.28, L = -1.28 · 2 · log 0.6 = 1.3077
    # token 1: w = 0.5 (no lower bound), L = -0.5 · 2 · log 0.6 = 0.5108
    assert loss[0].tolist() == pytest.approx([-1.28 * 2 * math.log(0.6), -0.5 * 2 * math.log(0.6)], rel=1e-5)
    assert clipped[0].tolist() == [True, False]
    loss.sum().backward()
    assert lp.grad[0].tolist() == pytest.approx([-2.56, -1.0], rel=1e-5)  # -w A: the clipped one too


def test_mismatch_weights_truncate_mask_and_multiply_per_sequence():
    trainer = torch.tensor([[0.0, -1.0, -2.0]])
    engine = torch.tensor([[0.0, -1.5, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    # log w = [0.5, -1.0]: w = [1.6487, 0.3679]
    tis = mismatch_weights(trainer, engine, mask, "tis", cap=1.5)
    assert tis[0].tolist() == pytest.approx([0.0, 1.5, math.exp(-1.0)], rel=1e-5)
    mis = mismatch_weights(trainer, engine, mask, "mis", cap=1.5)
    assert mis[0].tolist() == pytest.approx([0.0, 0.0, math.exp(-1.0)], rel=1e-5)
    seq = mismatch_weights(trainer, engine, mask, "tis", cap=1.5, level="sequence")
    assert seq[0].tolist() == pytest.approx([0.0, math.exp(-0.5), math.exp(-0.5)], rel=1e-5)  # e^(0.5-1)
    assert mismatch_weights(trainer, engine, mask, "none", cap=1.5)[0].tolist() == [1.0, 1.0, 1.0]


def test_reinforce_pp_returns_to_go_normalised_over_the_batch():
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    # row 0: -β KL = -0.1 on its first token, the outcome 1 on its last; row 1: outcome 0
    rewards = torch.tensor([[-0.1, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    adv = reinforce_pp_advantages(rewards, mask)
    # returns to go over trained tokens (the observation at 2 is skipped): [0.9, 1, -, 1], [0, 0]
    # batch mean 2.9 / 5 = 0.58; variance (0.32² + 0.42² + 0.42² + 0.58² + 0.58²) / 5 = 0.2256
    std = math.sqrt(0.2256)
    want = [[0.32 / std, 0.42 / std, 0.0, 0.42 / std], [-0.58 / std, -0.58 / std, 0.0, 0.0]]
    assert adv.tolist()[0] == pytest.approx(want[0], abs=1e-4)
    assert adv.tolist()[1] == pytest.approx(want[1], abs=1e-4)


def test_overlong_penalty_is_dapo_soft_punishment():
    # budget 32, buffer 8: free up to 24 tokens, then linear to -1 at 32, -1 beyond
    r = overlong_penalty(torch.tensor([20, 24, 28, 32, 40]), max_len=32, buffer_len=8, penalty=0.5)
    assert r.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -0.5])
    assert overlong_penalty(torch.tensor([40]), 32, 0).tolist() == [0.0]  # off


# -- settings: the same meaning everywhere, or refused -------------------------------------------

def _cfg(tmp_path, algorithm, **rl):
    return tiny_learner_config(tmp_path, algorithm, prompts=2, steps=2, **rl)


@pytest.mark.parametrize("algorithm,rl,message", [
    ("grpo", dict(baseline="moving-average"), "rl.baseline = 'moving-average' does not apply to grpo"),
    ("grpo", dict(critic="shared"), "it is a setting of ppo"),
    ("rloo", dict(epochs_per_batch=2), "unclipped policy gradient"),
    ("reinforce", dict(mini_batches_per_epoch=2), "unclipped policy gradient"),
    ("grpo", dict(kl_in_reward=True), "rl.kl_in_reward = true needs rl.kl_coef > 0"),
    ("ppo", dict(kl_target=0.1), "rl.kl_target"),
    ("grpo", dict(is_correction="tis"), "rl.old_logprobs = recompute"),
    ("grpo", dict(resample_max_attempts=2), "rl.filter_zero_variance"),
    ("gspo", dict(loss_agg="seq-mean-token-sum-norm"), "gspo always uses 'seq-mean-token-mean'"),
    ("dapo", dict(loss_agg="seq-mean-token-mean"), "dapo always uses 'token-mean'"),
])
def test_a_setting_an_algorithm_cannot_honour_is_refused(tmp_path, algorithm, rl, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_settings(ALGORITHMS.get(algorithm), _cfg(tmp_path, algorithm, **rl))


@pytest.mark.parametrize("config", ["sft_tiny", "rm_tiny", "dpo_tiny"])
def test_offline_learners_refuse_on_policy_settings(config):
    from rlvr.core.config import load_config

    load_config(config, [])  # as shipped: accepted
    with pytest.raises(ValueError, match=r"rl.share_prompts = False does not apply to (sft|rm|dpo)"):
        load_config(config, ["--rl.share_prompts", "false"])
    with pytest.raises(ValueError, match=r"rl.kl_coef = 0.5 does not apply"):
        load_config(config, ["--rl.kl_coef", "0.5"])


def test_algorithm_defaults_apply_only_where_the_config_left_the_global_default(tmp_path):
    cfg, notes = resolve_settings(ALGORITHMS.get("gspo"), _cfg(tmp_path, "gspo"))
    assert (cfg.rl.clip_low, cfg.rl.clip_high, cfg.rl.loss_agg) == (3e-4, 4e-4, "seq-mean-token-mean")
    assert any("rl.clip_low = 0.0003" in n for n in notes)
    cfg, _ = resolve_settings(ALGORITHMS.get("gspo"), _cfg(tmp_path, "gspo", clip_high=0.01))
    assert cfg.rl.clip_high == 0.01  # the user's value wins
    cfg, _ = resolve_settings(ALGORITHMS.get("dapo"), _cfg(tmp_path, "dapo"))
    assert cfg.rl.filter_zero_variance and cfg.rl.clip_high == 0.28 and cfg.rl.resample_max_attempts == 3


def test_every_on_policy_algorithm_is_listed_with_a_summary():
    from rlvr.algorithms.base import OnPolicyAlgorithm

    for name in ON_POLICY:
        algo = ALGORITHMS.get(name)
        assert isinstance(algo, OnPolicyAlgorithm) and algo.name == name and algo.__doc__


# -- the loop ------------------------------------------------------------------------------------

def _traj(i, sampled, *, reward, group=None):
    t = Trajectory.from_prompt([5, 6], group_id=group or f"g{i // 2}", task_id=f"t{i}")
    t.append_sampled(sampled, [-1.0] * len(sampled))
    t.reward, t.finish_reason = reward, "eos"
    return t


def _fake_rollout(monkeypatch, make, offset=0.0):
    """``common.rollout`` → ``make(step, attempt)``'s trajectories with behaviour logprobs equal to
    the current policy's plus ``offset`` (an engine that disagrees with the trainer by that much)."""
    calls = []

    def rollout(s, step, attempt=0):
        calls.append((step, attempt))
        trajs = make(step, attempt)
        lp = common.forward_logprobs(s, collate(trajs, s.tokenizer.pad_token_id))  # (N, T)
        for i, t in enumerate(trajs):
            t.logprobs = [float(lp[i, j]) + offset if m else x
                          for j, (x, m) in enumerate(zip(t.logprobs, t.loss_mask))]
        return trajs, {"time/rollout": 0.0}

    monkeypatch.setattr(common, "rollout", rollout)
    return calls


def _model(tokenizer, seed=0):
    from rlvr.core.models import build_tiny_model

    return build_tiny_model(tokenizer, hidden_size=32, num_layers=1, seed=seed)


def _rows(cfg):
    import json

    return [json.loads(x) for x in open(f"{cfg.run.output_dir}/metrics.jsonl").read().splitlines()]


def _varied(step, attempt):
    # two groups of two with different rewards; lengths differ so sequence and token means differ
    return [_traj(0, [10, 11, 12], reward=1.0), _traj(1, [13], reward=0.0),
            _traj(2, [14, 15], reward=0.5), _traj(3, [16, 17, 18, 19], reward=0.0)]


def _last_gradient(tmp_path, tokenizer, monkeypatch, algorithm, tag, **rl):
    _fake_rollout(monkeypatch, _varied)
    cfg = _cfg(tmp_path / tag, algorithm, **rl)
    cfg.optim.lr = 0.05  # step 1 moves the policy away from the reference, so step 2 has a KL
    with record_gradients() as grads:
        learner_for(algorithm)(cfg, model=_model(tokenizer), tokenizer=tokenizer, tasks=TASKS)
    return grads[-1], _rows(cfg)


@pytest.mark.parametrize("algorithm", ON_POLICY)
def test_kl_in_reward_changes_the_gradient_of_every_algorithm(tmp_path, tiny_tokenizer, monkeypatch,
                                                              algorithm):
    # kl_coef 5 in the reward against no KL at all: identical at step 1 (policy = reference), so
    # the step-2 gradients differ only if the KL reached the reward (it did not for GRPO before)
    with_kl, rows = _last_gradient(tmp_path, tiny_tokenizer, monkeypatch, algorithm, "kl",
                                   kl_coef=5.0, kl_in_reward=True)
    without, _ = _last_gradient(tmp_path, tiny_tokenizer, monkeypatch, algorithm, "nokl")
    assert rows[1]["train/ref_kl"] != 0.0
    assert rows[1]["train/shaped_reward"] != pytest.approx(sum(t.reward for t in _varied(0, 0)) / 4)
    assert (with_kl - without).abs().max() > 1e-6


def test_groups_come_from_group_id_not_list_order(tmp_path, tiny_tokenizer, monkeypatch):
    interleaved = lambda step, attempt: [_traj(0, [10, 11], reward=1.0, group="a"),
                                         _traj(1, [12, 13], reward=5.0, group="b"),
                                         _traj(2, [14, 15], reward=0.0, group="a"),
                                         _traj(3, [16, 17], reward=3.0, group="b")]
    seen = {}
    real = common.update_policy

    def spy(s, batch, algo, **kw):
        seen["adv"] = [float(row[m > 0][0]) for row, m in zip(batch.advantages, batch.loss_mask)]
        return real(s, batch, algo, **kw)

    monkeypatch.setattr(common, "update_policy", spy)
    _fake_rollout(monkeypatch, interleaved)
    cfg = _cfg(tmp_path, "rloo")
    cfg.run.steps = 1
    learner_for("rloo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer, tasks=TASKS)
    # a = [1, 0] → ±1, b = [5, 3] → ±2 (leave-one-out: r_i - r_other); order a, a, b, b
    assert seen["adv"] == pytest.approx([1.0, -1.0, 2.0, -2.0])
    with pytest.raises(ValueError, match="groups must hold rollout.samples_per_prompt = 2"):
        onpolicy.by_group(interleaved(1, 0)[:3], 2)


def test_dynamic_sampling_redraws_until_the_batch_has_signal(tmp_path, tiny_tokenizer, monkeypatch):
    def make(step, attempt):
        if attempt == 0:  # one flat group, one with signal
            return [_traj(0, [10], reward=1.0, group="f0"), _traj(1, [11], reward=1.0, group="f0"),
                    _traj(2, [12], reward=1.0, group="v0"), _traj(3, [13], reward=0.0, group="v0")]
        return [_traj(4, [14], reward=0.0, group=f"v{attempt}"), _traj(5, [15], reward=1.0, group=f"v{attempt}"),
                _traj(6, [16], reward=0.0, group=f"f{attempt}"), _traj(7, [17], reward=0.0, group=f"f{attempt}")]

    calls = _fake_rollout(monkeypatch, make)
    cfg = _cfg(tmp_path, "dapo")
    cfg.run.steps = 1
    learner_for("dapo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer, tasks=TASKS)
    [row] = _rows(cfg)
    assert calls == [(1, 0), (1, 1)]  # one re-draw filled the 2 groups
    assert row["train/sampling_attempts"] == 2 and row["train/trajectories_used"] == 4
    assert row["train/groups_dropped"] == 2  # f0 and f1


def test_recomputed_old_logprobs_measure_and_correct_the_engine_gap(tmp_path, tiny_tokenizer, monkeypatch):
    # the engine's logprobs are the trainer's + 0.1: gap 0.1, token weights e^-0.1 = 0.905
    _fake_rollout(monkeypatch, _varied, offset=0.1)
    cfg = _cfg(tmp_path, "grpo", old_logprobs="recompute", is_correction="tis", is_cap=2.0)
    cfg.run.steps = 1
    learner_for("grpo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer, tasks=TASKS)
    [row] = _rows(cfg)
    assert row["train/logprob_gap"] == pytest.approx(0.1, abs=1e-4)
    assert row["train/is_weight"] == pytest.approx(math.exp(-0.1), abs=1e-4)
    assert row["train/approx_kl"] == pytest.approx(0.0, abs=1e-6)  # the ratio uses the trainer's π_old


def test_a_step_where_every_episode_failed_stops_the_run(tmp_path, tiny_tokenizer, monkeypatch):
    def broken(step, attempt):
        out = _varied(step, attempt)
        for t in out:
            t.error = "prompt of 600 tokens exceeds rollout.max_total_tokens = 96"
        return out

    _fake_rollout(monkeypatch, broken)
    cfg = _cfg(tmp_path, "grpo")
    with pytest.raises(RuntimeError, match="step 1: all 4 episodes failed.*max_total_tokens"):
        learner_for("grpo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer, tasks=TASKS)


@pytest.mark.parametrize("algorithm", ["grpo", "gspo", "cispo", "reinforce_pp"])
def test_one_batch_of_8_equals_4_4_and_3_3_2_micro_batches(tmp_path, tiny_tokenizer, algorithm):
    from conftest import mixed_trajectories

    cfg, _ = resolve_settings(ALGORITHMS.get(algorithm), _cfg(tmp_path, algorithm, kl_coef=0.2,
                                                              entropy_coef=0.01))
    s = common.setup(cfg, _model(tiny_tokenizer), tiny_tokenizer, needs_ref=True)
    batch = common.prepare_batch(s, mixed_trajectories(8), torch.linspace(-1, 1, 8))
    # near-on-policy π_old (inside GSPO's tiny clip range only for some rows)
    batch.old_logprobs = (common.forward_logprobs(s, batch) + 1e-4 * torch.randn(batch.loss_mask.shape,
                          generator=torch.Generator().manual_seed(0))) * batch.loss_mask
    grads = []
    for micro in (8, 4, 3):
        s.cfg.optim.micro_batch_size = micro
        s.model.zero_grad(set_to_none=True)
        common.accumulate_gradients(s, batch, ALGORITHMS.get(algorithm), kl_coef=0.2)
        grads.append(torch.cat([p.grad.flatten() for p in s.model.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-4, atol=1e-6)


def test_bf16_keeps_the_small_updates_fp32_makes(tmp_path, tiny_tokenizer):
    """Mixed precision: at lr 1e-6 a bf16 weight could not hold one AdamW step (8 mantissa bits);
    with fp32 master weights the bf16 run changes about as many weights as the fp32 run."""
    from rlvr.data.tasks import load_tasks

    changed = {}
    for dtype in ("float32", "bfloat16"):
        cfg = _cfg(tmp_path / dtype, "grpo", entropy_coef=0.01)
        cfg.run.steps, cfg.optim.lr, cfg.model.dtype = 1, 1e-6, dtype
        model = _model(tiny_tokenizer)
        before = [p.detach().clone() for p in model.parameters()]
        learner_for("grpo")(cfg, model=model, tokenizer=tiny_tokenizer, tasks=load_tasks("calculator", 4))
        diff = [(a != b.detach()).float() for a, b in zip(before, model.parameters())]
        changed[dtype] = float(sum(d.sum() for d in diff) / sum(d.numel() for d in diff))
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert changed["float32"] > 0.5
    assert changed["bfloat16"] > 0.9 * changed["float32"], changed
    # what bf16 master weights would have kept of the same step: almost nothing
    w = torch.full((1000,), 0.02, dtype=torch.bfloat16)
    assert ((w - 1e-6) != w).float().mean() == 0


# -- the engine's weights are verified after every push ------------------------------------------

@pytest.mark.parametrize("push_arrives", [True, False])
def test_a_weight_push_that_never_reaches_the_engine_stops_the_run(tmp_path, tiny_tokenizer,
                                                                   monkeypatch, push_arrives):
    """An engine with its own copy of the weights (as vLLM or a rollout server has): when
    ``load_weights`` really copies them the run trains; when the push is lost the fixed probe
    disagrees after the first update and the run stops, naming the gap."""
    import copy

    import rlvr.learners.common
    from rlvr.data.tasks import load_tasks

    real = rlvr.learners.common.HFEngine

    class SeparateCopy(real):
        def __init__(self, model, tokenizer, **kw):
            super().__init__(copy.deepcopy(model), tokenizer, **kw)

        def load_weights(self, model_or_state_dict):
            if push_arrives:
                self.model.load_state_dict(model_or_state_dict.state_dict())

    monkeypatch.setattr(rlvr.learners.common, "HFEngine", SeparateCopy)  # the engine setup builds
    cfg = _cfg(tmp_path, "grpo", entropy_coef=0.1)
    cfg.optim.lr = 0.05  # one step moves the logprobs well past the tolerance
    run = lambda: learner_for("grpo")(cfg, model=_model(tiny_tokenizer), tokenizer=tiny_tokenizer,
                                         tasks=load_tasks("calculator", 4))
    if push_arrives:
        final = run()["final"]
        assert final["train/optimizer_steps"] == 1
        assert final["sync/probe_gap"] < 1e-5 and final["time/sync"] >= 0
    else:
        with pytest.raises(RuntimeError, match="step 1: the rollout engine disagrees with the trainer"):
            run()
        # warn: the run goes on, and the gap it logs is the one that stopped it above
        cfg.rollout.weight_sync_on_mismatch = "warn"
        cfg.run.output_dir = str(tmp_path / "warned")
        final = run()["final"]
        assert final["train/optimizer_steps"] == 1 and final["sync/probe_gap"] > 0.02
