"""Preference losses on hand-computed log-probabilities (arithmetic in the comments).

Constants: ln(1 + e^-1) = 0.313262, ln(1 + e^-1.5) = 0.201413, ln(1 + e^2) = 2.126928, ln 2 = 0.693147.
"""

import math

import pytest
import torch

from rlvr.algorithms.pref_losses import (bradley_terry_loss, cdpo_loss, dpo_sigmoid_loss, ipo_loss, masked_nll_sum,
                              simpo_loss)

T = torch.tensor


def close(a, b, tol=1e-5):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                          atol=tol), (a, b)


def test_bradley_terry():
    out = bradley_terry_loss(T([2.0, 0.0, 1.0]), T([1.0, 2.0, 1.0]))
    # margins 1, -2, 0 → -log σ(1) = ln(1+e^-1) = 0.313262; -log σ(-2) = ln(1+e^2) = 2.126928; ln 2
    close(out.losses, [0.313262, 2.126928, 0.693147])
    close(out.chosen_rewards, [2.0, 0.0, 1.0])
    close(out.rejected_rewards, [1.0, 2.0, 1.0])


def test_bradley_terry_gradient_pushes_chosen_up():
    c = T([0.0], requires_grad=True)
    r = T([0.0], requires_grad=True)
    bradley_terry_loss(c, r).losses.sum().backward()
    # d/dc -log σ(c - r) = -(1 - σ(0)) = -0.5; d/dr = +0.5
    close(c.grad, [-0.5])
    close(r.grad, [0.5])


def test_dpo_sigmoid():
    # π_c = -1, π_r = -3, ref_c = -2, ref_r = -2 → log-ratios +1 and -1, h = 2; β = 0.5 → β h = 1
    out = dpo_sigmoid_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.5)
    close(out.losses, [0.313262])  # -log σ(1)
    close(out.chosen_rewards, [0.5])  # β × (+1)
    close(out.rejected_rewards, [-0.5])  # β × (-1)


def test_dpo_is_ln2_when_policy_equals_reference():
    x = T([-5.0, -7.0])
    out = dpo_sigmoid_loss(x, x - 1, x, x - 1, beta=0.1)
    close(out.losses, [math.log(2)] * 2)  # h = 0 → -log σ(0) = ln 2
    close(out.chosen_rewards - out.rejected_rewards, [0.0, 0.0])


def test_cdpo():
    # same pair as test_dpo_sigmoid (β h = 1), ε = 0.1:
    # 0.9 × -log σ(1) + 0.1 × -log σ(-1) = 0.9 × 0.313262 + 0.1 × 1.313262 = 0.281936 + 0.131326 = 0.413262
    out = cdpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.5, label_smoothing=0.1)
    close(out.losses, [0.413262])
    # ε = 0 is plain DPO
    close(cdpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), 0.5, 0.0).losses, [0.313262])
    with pytest.raises(ValueError, match="label_smoothing"):
        cdpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.5, label_smoothing=0.5)


def test_ipo():
    # β = τ = 0.25 → target 1/(2τ) = 2.
    # pair 1: h = (-1 - -2) - (-3 - -2) = 1 - (-1) = 2 → (2 - 2)² = 0
    # pair 2: h = (-2 - -2) - (-2 - -2) = 0 → (0 - 2)² = 4
    out = ipo_loss(T([-1.0, -2.0]), T([-3.0, -2.0]), T([-2.0, -2.0]), T([-2.0, -2.0]), beta=0.25)
    close(out.losses, [0.0, 4.0])
    close(out.chosen_rewards, [0.25, 0.0])  # β × log-ratio (1 and 0)
    # pair 3: h = 5 overshoots the target and is penalised too: (5 - 2)² = 9 (DPO would reward it)
    close(ipo_loss(T([3.0]), T([-2.0]), T([-0.0]), T([0.0]), beta=0.25).losses, [9.0])


def test_simpo():
    # chosen: -4 over 2 tokens → -2; rejected: -9 over 3 tokens → -3; β = 2 → rewards -4 and -6;
    # margin 2 - γ 0.5 = 1.5 → -log σ(1.5) = ln(1 + e^-1.5) = 0.201413
    out = simpo_loss(T([-4.0]), T([-9.0]), T([2.0]), T([3.0]), beta=2.0, gamma=0.5)
    close(out.losses, [0.201413])
    close(out.chosen_rewards, [-4.0])
    close(out.rejected_rewards, [-6.0])


def test_masked_nll_sum():
    lp = T([[0.0, -1.0, -2.0, -3.0], [0.0, -0.5, -4.0, 0.0]])
    mask = T([[0, 1, 1, 0], [0, 0, 1, 0]])
    s, n = masked_nll_sum(lp, mask)
    close(s, 1.0 + 2.0 + 4.0)  # only masked tokens: 1 + 2 (row 0) + 4 (row 1) = 7
    close(n, 3.0)
