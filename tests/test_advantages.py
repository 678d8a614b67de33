import math

import pytest
import torch

from rlvr.algorithms.advantages import (gae, grpo_advantages, moving_average_baseline, reinforce_advantages,
                             rloo_advantages, whiten, zero_variance_groups)


def test_grpo_worked_example():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0])
    # mean 0.5; deviations ±0.5; G-1 std = sqrt(4 * 0.25 / 3) = 0.5774 → 0.5 / 0.5774 = 0.866
    a = grpo_advantages(r, 4, "unbiased")
    assert a.tolist() == pytest.approx([0.866, -0.866, 0.866, -0.866], abs=1e-3)
    # G std = sqrt(4 * 0.25 / 4) = 0.5 → ±1.0
    assert grpo_advantages(r, 4, "biased").tolist() == pytest.approx([1, -1, 1, -1], abs=1e-5)
    # Dr. GRPO: no std, just centred
    assert grpo_advantages(r, 4, "none").tolist() == [0.5, -0.5, 0.5, -0.5]


def test_grpo_groups_are_consecutive_and_zero_variance_gives_zero():
    r = torch.tensor([1.0, 1.0, 3.0, 1.0])  # groups (1,1) and (3,1)
    a = grpo_advantages(r, 2, "biased")
    # group 2: mean 2, G std 1 → (+1, -1)
    assert a.tolist() == pytest.approx([0.0, 0.0, 1.0, -1.0], abs=1e-5)
    assert zero_variance_groups(r, 2).tolist() == [True, False]
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(r, 3)
    with pytest.raises(ValueError, match="std"):
        grpo_advantages(r, 2, "sample")


def test_rloo():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])  # one group of 4, sum 2
    # A_0 = 1 - (2-1)/3 = 2/3 ; A_1 = 0 - (2-0)/3 = -2/3
    assert rloo_advantages(r, 4).tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])


def test_reinforce_baselines():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])  # mean 0.25
    assert reinforce_advantages(r).tolist() == [0.75, -0.25, -0.25, -0.25]
    assert reinforce_advantages(r, baseline=0.5).tolist() == [0.5, -0.5, -0.5, -0.5]
    b = moving_average_baseline(None, 0.25)  # first batch starts at its mean
    assert b == 0.25
    assert moving_average_baseline(b, 1.0, decay=0.9) == pytest.approx(0.9 * 0.25 + 0.1 * 1.0)


def test_gae_plain_and_skipping_observations():
    # one sequence, three sampled tokens, reward 1 on the last, values 0.5, 0.5, 0.5
    m = torch.tensor([[1.0, 1.0, 1.0]])
    v = torch.tensor([[0.5, 0.5, 0.5]])
    r = torch.tensor([[0.0, 0.0, 1.0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    # gamma = lam = 1: A_t = sum of future rewards - V_t = 1 - 0.5
    assert adv[0].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # gamma 0.9, lam 0.5: delta_2 = 1 - .5 = .5 (bootstrap 0); delta_1 = 0 + .9*.5 - .5 = -.05;
    # delta_0 = -.05; A_2 = .5; A_1 = -.05 + .45*.5 = .175; A_0 = -.05 + .45*.175 = .02875
    adv, _ = gae(r, v, m, gamma=0.9, lam=0.5)
    assert adv[0].tolist() == pytest.approx([0.02875, 0.175, 0.5])
    # the same three sampled tokens with two observation tokens between them (junk rewards and
    # values there) give the same advantages on the sampled tokens and 0 on the observation
    m2 = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0]])
    v2 = torch.tensor([[0.5, 9.0, 9.0, 0.5, 0.5]])
    r2 = torch.tensor([[0.0, 5.0, 5.0, 0.0, 1.0]])
    adv2, _ = gae(r2, v2, m2, gamma=0.9, lam=0.5)
    assert adv2[0].tolist() == pytest.approx([0.02875, 0.0, 0.0, 0.175, 0.5])


def test_whiten():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    # masked mean 2, biased var 1 → (-1, +1), masked entry 0
    assert whiten(x, m)[0].tolist() == pytest.approx([-1.0, 1.0, 0.0], abs=1e-5)
    # keep the mean: (-1 + 2, 1 + 2)
    assert whiten(x, m, shift_mean=False)[0].tolist() == pytest.approx([1.0, 3.0, 0.0], abs=1e-5)
    assert not math.isnan(whiten(torch.ones(1, 2), torch.ones(1, 2)).sum().item())
