import math

import pytest
import torch

from rlvr.algorithms.losses import (adaptive_kl_coef, aggregate, clipped_policy_loss, entropy_from_logits,
                         kl_estimator, kl_k1, kl_k2, kl_k3, kl_penalized_rewards,
                         reinforce_policy_loss, value_loss)


def test_clipped_surrogate_low_and_high():
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))  # ratios against old = 1
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    loss, clipped = clipped_policy_loss(lp, old, adv, clip_low=0.2, clip_high=0.28)
    # ratio 1.5, A=+1: min(1.5, 1.28) = 1.28 (clipped) ; ratio .5, A=-1: min(-.5, -.8) = -.8 (clipped)
    # ratio 1.1, A=+1: 1.1 inside ; ratio .7, A=+1: min(.7, .8) = .7 (unclipped branch smaller)
    assert loss[0].tolist() == pytest.approx([-1.28, 0.8, -1.1, -0.7], abs=1e-5)
    assert clipped.tolist() == [[True, True, False, False]]


def test_surrogate_gradient_equals_reinforce_on_policy():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[2.0, -1.0]])
    loss, _ = clipped_policy_loss(lp, lp.detach(), adv)
    (g1,) = torch.autograd.grad(loss.sum(), lp)
    (g2,) = torch.autograd.grad(reinforce_policy_loss(lp, adv).sum(), lp)
    assert g1.tolist() == g2.tolist() == [[-2.0, 1.0]]


def test_aggregation_modes():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token-mean: (1+2+3+4) / 4 tokens = 2.5
    assert aggregate(x, m, "token-mean", num_seqs=2, num_tokens=4, max_len=8).item() == 2.5
    # seq-mean-token-mean: (mean(1,2,3)=2 + 4) / 2 = 3
    assert aggregate(x, m, "seq-mean-token-mean", num_seqs=2, num_tokens=4, max_len=8).item() == 3.0
    # Dr. GRPO: 10 / (2 seqs * 8) = 0.625
    assert aggregate(x, m, "seq-mean-token-sum-norm", num_seqs=2, num_tokens=4, max_len=8).item() == 0.625
    # summing micro-batches with mini-batch normalisers gives the whole
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        whole = aggregate(x, m, mode, num_seqs=2, num_tokens=4, max_len=8)
        parts = sum(aggregate(x[i:i + 1], m[i:i + 1], mode, num_seqs=2, num_tokens=4, max_len=8)
                    for i in range(2))
        assert parts.item() == pytest.approx(whole.item())
    with pytest.raises(ValueError, match="not one of"):
        aggregate(x, m, "mean", num_seqs=2, num_tokens=4, max_len=8)


def test_value_loss_clipping():
    v, old, ret = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([3.0])
    loss, _ = value_loss(v, old, ret)
    assert loss.item() == 0.5  # 0.5 * (2-3)^2
    # clip 0.5: v_clip = 1.5, (1.5-3)^2 = 2.25 > 1 → 0.5 * 2.25
    loss, clipped = value_loss(v, old, ret, clip=0.5)
    assert loss.item() == 1.125 and clipped.item()


def test_kl_estimators():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # log pi - log ref = log 2 = 0.6931
    assert kl_k1(lp, ref).item() == pytest.approx(0.693147, abs=1e-5)
    assert kl_k2(lp, ref).item() == pytest.approx(0.5 * 0.693147 ** 2, abs=1e-5)
    # k3: r = ref/pi = 0.5 → 0.5 - log 0.5 - 1 = 0.193147
    assert kl_k3(lp, ref).item() == pytest.approx(0.193147, abs=1e-5)
    assert kl_k3(lp, lp).item() == 0.0
    assert kl_estimator("k2") is kl_k2
    with pytest.raises(ValueError, match="k4"):
        kl_estimator("k4")


def test_kl_in_reward_puts_outcome_on_last_sampled_token():
    kl = torch.tensor([[9.0, 0.1, 0.2, 9.0, 0.3, 9.0]])
    m = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]])  # prompt, 2 sampled, obs, 1 sampled, pad
    r = kl_penalized_rewards(torch.tensor([1.0]), kl, m, beta=0.5)
    # -0.5 * kl on sampled tokens; +1 on index 4, the last sampled token
    assert r[0].tolist() == pytest.approx([0.0, -0.05, -0.1, 0.0, 1.0 - 0.15, 0.0])


def test_adaptive_kl_and_entropy():
    # KL 2x the target: error clipped to 0.2; beta * (1 + 0.2 * 100/1000) = 0.1 * 1.02
    assert adaptive_kl_coef(0.1, 0.2, 0.1, 1000, 100) == pytest.approx(0.102)
    assert adaptive_kl_coef(0.1, 0.1, 0.1, 1000, 100) == pytest.approx(0.1)
    # uniform over 4 → log 4
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
