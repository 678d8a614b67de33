"""Losses as pure functions: per-token terms in, per-token terms out; aggregation is explicit.

Every loss here returns a per-token tensor (B, T) that is *not* masked or averaged. The learner
turns per-token terms into one number with :func:`aggregate`, passing the normalisers (sequences
and tokens of the whole mini-batch) once, so splitting a mini-batch into micro-batches changes
nothing (``tests/test_learners.py`` checks one batch of 8 = two micro-batches of 4).
"""

from __future__ import annotations

import torch

#: ``rl.loss_agg`` modes, see :func:`aggregate`.
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, *, num_seqs: int,
              num_tokens: int, max_len: int) -> torch.Tensor:
    """Masked sum of a (B, T) per-token term, normalised for the whole mini-batch.

    - ``token-mean``: sum over all tokens / ``num_tokens`` (DAPO, https://arxiv.org/abs/2503.14476).
    - ``seq-mean-token-mean``: mean over sequences of each sequence's token mean (GRPO paper).
    - ``seq-mean-token-sum-norm``: token sums / (``num_seqs`` × ``max_len``), a constant budget
      (Dr. GRPO, https://arxiv.org/abs/2503.20783), so long answers are not down-weighted.

    ``num_seqs`` / ``num_tokens`` count the *mini-batch* this micro-batch belongs to; summing the
    returned values over its micro-batches gives the mini-batch loss.
    """
    m = mask.float()  # (B, T)
    if mode == "token-mean":
        return (per_token * m).sum() / max(num_tokens, 1)
    if mode == "seq-mean-token-mean":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # (B,)
        return per_seq.sum() / max(num_seqs, 1)
    if mode == "seq-mean-token-sum-norm":
        return (per_token * m).sum() / (max(num_seqs, 1) * max(max_len, 1))
    raise ValueError(f"loss aggregation {mode!r} is not one of {AGG_MODES}")


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, https://arxiv.org/abs/1707.06347 eq. 7) with
    separate low / high clip (clip-higher, DAPO https://arxiv.org/abs/2503.14476 eq. 10):

        L_t = -min(rho_t A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) A_t),  rho_t = pi / pi_old

    Returns ``(loss, clipped)``, both (B, T); ``clipped`` marks tokens where the clipped branch is
    the active one (for the clip-fraction metric).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped)


def reinforce_policy_loss(logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Unclipped policy gradient (REINFORCE, Williams 1992; RLOO https://arxiv.org/abs/2402.14740):
    ``L_t = -A_t log pi(a_t | s_t)`` (B, T). Its gradient equals the clipped surrogate's at
    ``pi = pi_old``, so with one update per batch the two agree."""
    return -advantages * logprobs


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic loss ``0.5 (V - R)^2`` (B, T); with ``clip``, PPO's pessimistic clipped form
    ``0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)`` (Schulman et al. 2017, as in
    the OpenAI baselines). Returns ``(loss, clipped)``."""
    err = (values - returns) ** 2  # (B, T)
    if clip is None or clip <= 0:
        return 0.5 * err, torch.zeros_like(err, dtype=torch.bool)
    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    err_clip = (v_clip - returns) ** 2
    return 0.5 * torch.maximum(err, err_clip), err_clip > err


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis, ``H = logsumexp(z) - sum_v p_v z_v`` (...)."""
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


# -- KL to the reference policy (Schulman, "Approximating KL divergence", 2020,
#    http://joschu.net/blog/kl-approx.html); inputs are logprobs of the sampled tokens.

def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log pi_ref: unbiased, high variance, can be negative (B, T)."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 (log pi - log pi_ref)^2: biased, low variance, >= 0 (B, T)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1: unbiased, >= 0 (GRPO eq. 4)."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimator(name: str):
    try:
        return KL_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"rl.kl_estimator {name!r} is not one of {sorted(KL_ESTIMATORS)}") from None


def kl_penalized_rewards(outcome: torch.Tensor, kl: torch.Tensor, loss_mask: torch.Tensor,
                         beta: float) -> torch.Tensor:
    """Per-token rewards of PPO-RLHF (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593 eq. 2;
    Ouyang et al. 2022): ``r_t = -beta * KL_t`` on every sampled token, plus the outcome reward on
    the last sampled token of each sequence (B, T). ``outcome`` is (B,)."""
    m = loss_mask.float()  # (B, T)
    rewards = -beta * kl * m
    pos = torch.arange(m.shape[1], device=m.device).expand_as(m)  # (B, T)
    last = (pos * m).argmax(dim=1)  # (B,) index of the last sampled token
    has = m.sum(1) > 0  # a sequence with no sampled token gets no outcome reward
    rewards[torch.arange(m.shape[0]), last] += outcome.float() * has
    return rewards


def adaptive_kl_coef(beta: float, observed_kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Adaptive KL controller (Ziegler et al. 2019 §2.2): ``beta ← beta (1 + clip(KL/target - 1,
    -0.2, 0.2) · n_steps / horizon)``. ``n_steps`` is the number of samples the KL was measured on.
    A fixed coefficient simply never calls this."""
    error = max(-0.2, min(0.2, observed_kl / target - 1.0))
    return beta * (1.0 + error * n_steps / horizon)


def gspo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                     loss_mask: torch.Tensor, clip_low: float = 3e-4, clip_high: float = 4e-4,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO, group sequence policy optimisation (Zheng et al. 2025, https://arxiv.org/abs/2507.18071
    eq. 5-7, the GSPO-token form of eq. 13):

        s_i = exp( (1/|y_i|) sum_t (log pi(y_i,t) - log pi_old(y_i,t)) )        (length-normalised)
        s_i,t = sg[s_i] * pi(y_i,t) / sg[pi(y_i,t)]                            (value s_i, token grads)
        L_i,t = -min(s_i,t A_i,t, clip(s_i,t, 1 - clip_low, 1 + clip_high) A_i,t)

    The sequence ratio is clipped as a whole, so one stray token cannot move a trajectory's
    weight; the paper's ranges are 3e-4 / 4e-4. Every trained token of trajectory i carries the
    same value, so ``seq-mean-token-mean`` aggregation gives the paper's (1/G) sum_i. Returns
    ``(loss, clipped)``, both (B, T).
    """
    m = loss_mask.float()  # (B, T)
    log_s = ((logprobs - old_logprobs) * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # (B,)
    s_tok = torch.exp(log_s.detach()[:, None] + logprobs - logprobs.detach())  # (B, T) value s_i
    unclipped = s_tok * advantages
    clipped = torch.clamp(s_tok, 1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped)


def cispo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      clip_low: float = 1.0, clip_high: float = 0.28) -> tuple[torch.Tensor, torch.Tensor]:
    """CISPO, clipped importance-sampling policy optimisation (MiniMax-M1, 2025,
    https://arxiv.org/abs/2506.13585 eq. 4-5):

        r_t = pi(a_t) / pi_old(a_t);   w_t = sg[clip(r_t, 1 - clip_low, 1 + clip_high)]
        L_t = -w_t A_t log pi(a_t)

    Unlike PPO's clip, no token's gradient is dropped: the importance weight is bounded and
    detached, the REINFORCE term always flows. The paper leaves the low side unbounded
    (``clip_low = 1`` makes the bound 0). Returns ``(loss, clipped)`` (B, T); ``clipped`` marks
    tokens whose weight was bounded.
    """
    ratio = torch.exp(logprobs.detach() - old_logprobs)  # (B, T)
    w = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return -w * advantages * logprobs, (w != ratio)


def mismatch_weights(trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor,
                     loss_mask: torch.Tensor, mode: str, cap: float, level: str = "token") -> torch.Tensor:
    """Importance weights (B, T) that correct for the rollout engine sampling from a slightly
    different policy than the trainer's (Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training", https://fengyao.notion.site/off-policy-rl):

        w_t = pi_trainer_old(a_t) / pi_engine(a_t)      (token)   or   prod_t w_t (sequence)
        tis: min(w, cap)        mis: w if w <= cap else 0

    The weights multiply the per-token policy loss and carry no gradient. ``mode`` none → ones.
    """
    m = loss_mask.float()  # (B, T)
    if mode == "none":
        return torch.ones_like(m)
    log_w = (trainer_logprobs - engine_logprobs) * m  # (B, T)
    if level == "sequence":
        log_w = log_w.sum(-1, keepdim=True).expand_as(m)  # (B, T) one weight per trajectory
    elif level != "token":
        raise ValueError(f"rl.is_level {level!r} is not token or sequence")
    w = torch.exp(log_w.clamp(max=50.0))  # a huge weight is capped or masked below anyway
    if mode == "tis":
        return torch.clamp(w, max=cap) * m
    if mode == "mis":
        return torch.where(w <= cap, w, torch.zeros_like(w)) * m
    raise ValueError(f"rl.is_correction {mode!r} is not none, tis or mis")
