"""Advantage estimators: pure functions of rewards (and values), one per variant.

Groups are consecutive: ``rollout.collect`` returns the ``samples_per_prompt`` samples of one task
next to each other, so a (N,) reward vector reshapes to (N / G, G).
"""

from __future__ import annotations

import torch

#: GRPO std modes (``rl.std_normalize``): unbiased = over G-1, biased = over G, none = Dr. GRPO.
STD_MODES = ("unbiased", "biased", "none")


def grpo_advantages(rewards: torch.Tensor, group_size: int, std: str = "unbiased",
                    eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages, GRPO (Shao et al. 2024, https://arxiv.org/abs/2402.03300 §4.1.2):

        A_i = (r_i - mean(r_group)) / (std(r_group) + eps)

    ``std="unbiased"`` divides the squared deviations by G-1 (torch/TRL default), ``"biased"`` by G,
    and ``"none"`` leaves the std out (Dr. GRPO, Liu et al. 2025, https://arxiv.org/abs/2503.20783).
    A group whose rewards are all equal gets advantage 0 in every mode.
    """
    if std not in STD_MODES:
        raise ValueError(f"std must be one of {STD_MODES}, got {std!r}")
    r = rewards.float()
    if r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
    g = r.view(-1, group_size)  # (N/G, G)
    centred = g - g.mean(dim=1, keepdim=True)  # (N/G, G)
    if std != "none":
        centred = centred / (g.std(dim=1, keepdim=True, unbiased=(std == "unbiased")) + eps)
    return centred.reshape(-1)  # (N,)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N/G,) bool: groups whose rewards are all equal (no learning signal; DAPO's dynamic
    sampling drops them, Yu et al. 2025, https://arxiv.org/abs/2503.14476)."""
    g = rewards.float().view(-1, group_size)  # (N/G, G)
    return (g.max(dim=1).values - g.min(dim=1).values) == 0


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740 eq. 5):

        A_i = r_i - (sum_j r_j - r_i) / (K - 1)
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    g = rewards.float().view(-1, group_size)  # (N/K, K)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)  # (N/K, K)
    return (g - baseline).reshape(-1)  # (N,)


def reinforce_advantages(rewards: torch.Tensor, baseline: float | None = None) -> torch.Tensor:
    """REINFORCE with a baseline (Williams 1992): ``A_i = r_i - b``. ``baseline=None`` uses the
    batch mean; pass a moving average (:func:`moving_average_baseline`) for the other variant."""
    r = rewards.float()  # (N,)
    b = r.mean() if baseline is None else torch.tensor(float(baseline))
    return r - b


def moving_average_baseline(previous: float | None, batch_mean: float, decay: float = 0.9) -> float:
    """Exponential moving average of the reward, ``b ← decay·b + (1 - decay)·mean(r)``; the first
    batch starts it at its own mean. Update it *after* computing this batch's advantages so the
    baseline never depends on the rewards it is subtracted from."""
    if previous is None:
        return float(batch_mean)
    return decay * float(previous) + (1.0 - decay) * float(batch_mean)


def gae(rewards: torch.Tensor, values: torch.Tensor, loss_mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438):

        delta_t = r_t + gamma * V(s_next(t)) - V(s_t);   A_t = delta_t + gamma * lam * A_next(t)

    Steps are the ``loss_mask = 1`` tokens only. Observation tokens are not actions: the recursion
    skips over them, so ``next(t)`` is the next *sampled* token (the environment's reply is part
    of the transition), and their rewards, values and advantages are ignored (advantage 0).
    After the last sampled token the value is bootstrapped as 0. Returns ``(advantages, returns)``,
    both (B, T), ``returns = advantages + values`` on sampled tokens. The loop runs backwards over
    positions and is vectorised over the batch.
    """
    m = loss_mask.float()  # (B, T)
    v = values.float() * m  # (B, T)
    r = rewards.float() * m  # (B, T)
    B, T = m.shape
    next_value = v.new_zeros(B)  # (B,) value of the next sampled token; 0 after the last
    running = v.new_zeros(B)  # (B,) A of the next sampled token
    adv = torch.zeros_like(v)
    for t in range(T - 1, -1, -1):
        delta = r[:, t] + gamma * next_value - v[:, t]
        a = delta + gamma * lam * running
        step = m[:, t] > 0
        running = torch.where(step, a, running)  # observation tokens carry the recursion over
        next_value = torch.where(step, v[:, t], next_value)
        adv[:, t] = a * m[:, t]
    return adv, (adv + v) * m


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean when ``shift_mean``) over ``mask = 1``
    entries; masked entries come back 0. (PPO advantage / reward whitening, Ziegler et al. 2019,
    https://arxiv.org/abs/1909.08593.) Uses the biased variance over the masked entries."""
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def reinforce_pp_advantages(token_rewards: torch.Tensor, loss_mask: torch.Tensor,
                            gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ (Hu et al. 2025, https://arxiv.org/abs/2501.03262 eq. 5-7): the return to go of
    the per-token rewards (outcome on the last trained token, ``-beta KL_t`` on each when the KL is
    in the reward), normalised over the *whole batch* rather than per group:

        A_t = sum_{s >= t} gamma^(s - t) r_s;     A_t <- (A_t - mean(A)) / std(A)

    Observation tokens are skipped as in :func:`gae` (whose ``V = 0, lam = 1`` case this is).
    Returns (B, T), 0 off the mask.
    """
    returns, _ = gae(token_rewards, torch.zeros_like(token_rewards), loss_mask, gamma, 1.0)
    return whiten(returns, loss_mask)


def overlong_penalty(sampled_lengths: torch.Tensor, max_len: int, buffer_len: int,
                     penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, https://arxiv.org/abs/2503.14476 eq. 13),
    added to the reward of each trajectory (B,):

        R(|y|) = 0                                      if |y| <= L_max - L_cache
               = ((L_max - L_cache) - |y|) / L_cache    if L_max - L_cache < |y| <= L_max
               = -1                                     if |y| > L_max

    scaled by ``penalty``; ``L_max = max_len`` (the sampled-token budget), ``L_cache = buffer_len``.
    """
    if buffer_len <= 0:
        return torch.zeros_like(sampled_lengths, dtype=torch.float32)
    n = sampled_lengths.float()  # (B,)
    start = max_len - buffer_len
    r = torch.clamp((start - n) / buffer_len, min=-1.0, max=0.0)
    return penalty * r
