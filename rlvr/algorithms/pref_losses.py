"""Preference losses as small pure functions: one function per variant, no config objects.

Every function takes per-pair tensors of shape ``(P,)`` (P = number of preference pairs) and
returns a :class:`PrefLoss` of per-pair ``losses`` plus the implicit rewards of the chosen and
rejected responses, for metrics (margins, accuracy). The learner averages over pairs, once.

Sequence log-probabilities (``*_logps``) are sums over the completion tokens (``loss_mask == 1``)
of ``log π(token | prefix)``; SimPO divides them by the lengths it is given.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PrefLoss(NamedTuple):
    losses: torch.Tensor  # (P,) per-pair loss, not yet averaged
    chosen_rewards: torch.Tensor  # (P,) implicit (or explicit) reward of the chosen response
    rejected_rewards: torch.Tensor  # (P,) same for the rejected response


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> PrefLoss:
    """Bradley–Terry reward-model loss ``-log σ(r_c - r_r)``.

    The probability that the chosen response wins is ``σ(r_c - r_r)`` (Bradley & Terry, 1952);
    the reward model maximises its log-likelihood (Ouyang et al. 2022, eq. 1,
    https://arxiv.org/abs/2203.02155).
    """
    margin = chosen_scores - rejected_scores  # (P,)
    return PrefLoss(-F.logsigmoid(margin), chosen_scores.detach(), rejected_scores.detach())


def _logratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    chosen = policy_chosen_logps - ref_chosen_logps  # (P,) log π/π_ref of the chosen response
    rejected = policy_rejected_logps - ref_rejected_logps  # (P,)
    return chosen, rejected


def dpo_sigmoid_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                     ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                     beta: float) -> PrefLoss:
    """DPO: ``-log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)])``.

    Rafailov et al. 2023, eq. 7, https://arxiv.org/abs/2305.18290. The implicit reward of a
    response is ``β log π(y|x)/π_ref(y|x)``.
    """
    chosen, rejected = _logratios(policy_chosen_logps, policy_rejected_logps,
                                  ref_chosen_logps, ref_rejected_logps)
    logits = beta * (chosen - rejected)  # (P,)
    return PrefLoss(-F.logsigmoid(logits), beta * chosen.detach(), beta * rejected.detach())


def cdpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
              beta: float, label_smoothing: float) -> PrefLoss:
    """Conservative DPO: labels flipped with probability ε,
    ``-(1-ε) log σ(βh) - ε log σ(-βh)`` with ``h`` the DPO log-ratio difference.

    Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO",
    https://ericmitchell.ai/cdpo.pdf. ε = 0 is plain DPO.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen, rejected = _logratios(policy_chosen_logps, policy_rejected_logps,
                                  ref_chosen_logps, ref_rejected_logps)
    logits = beta * (chosen - rejected)  # (P,)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return PrefLoss(losses, beta * chosen.detach(), beta * rejected.detach())


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float) -> PrefLoss:
    """IPO: ``(h - 1/(2τ))²`` with ``h = (log π_c - log π_ref,c) - (log π_r - log π_ref,r)``, τ = β.

    Azar et al. 2023, eq. 17, https://arxiv.org/abs/2310.12036. The squared loss regresses the
    log-ratio gap onto a finite target instead of pushing it to infinity as DPO may.
    """
    if beta <= 0:
        raise ValueError(f"IPO needs beta (τ) > 0, got {beta}")
    chosen, rejected = _logratios(policy_chosen_logps, policy_rejected_logps,
                                  ref_chosen_logps, ref_rejected_logps)
    h = chosen - rejected  # (P,)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return PrefLoss(losses, beta * chosen.detach(), beta * rejected.detach())


def simpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor,
               beta: float, gamma: float) -> PrefLoss:
    """SimPO (reference-free): ``-log σ(β/|y_c| log π(y_c|x) - β/|y_r| log π(y_r|x) - γ)``.

    Meng et al. 2024, eq. 6, https://arxiv.org/abs/2405.14734. The reward is the length-normalised
    log-likelihood scaled by β; γ is the target reward margin.
    """
    chosen = beta * policy_chosen_logps / chosen_lengths.clamp(min=1)  # (P,)
    rejected = beta * policy_rejected_logps / rejected_lengths.clamp(min=1)  # (P,)
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return PrefLoss(losses, chosen.detach(), rejected.detach())


def masked_nll_sum(token_logprobs: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SFT: ``-Σ_t m_t log π(x_t | x_<t)`` over tokens with ``loss_mask == 1``, and the token count.

    Returns ``(sum, count)``; the learner divides once by the count of the whole batch, so
    micro-batching does not change the gradient.
    """
    mask = loss_mask.to(token_logprobs.dtype)  # (B, T)
    return -(token_logprobs * mask).sum(), mask.sum()
