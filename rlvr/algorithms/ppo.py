"""PPO with a learned critic (Schulman et al. 2017, https://arxiv.org/abs/1707.06347), in the
RLHF form of Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593) and Ouyang et al. 2022.

Per-token rewards (``-β KL_t`` on every trained token with ``rl.kl_in_reward``, plus the outcome
on the last one), optionally whitened (``rl.whiten_rewards``), GAE(γ, λ) against the critic's
values over trained tokens, optionally whitened advantages; the clipped surrogate for the policy
and the (clipped) value loss for the critic (:mod:`rlvr.learners.critic`: ``rl.critic`` separate
or shared). Deviation: GAE skips observation tokens (see :func:`rlvr.algorithms.advantages.gae`).
"""

import rlvr
from rlvr.algorithms.advantages import gae, whiten
from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.algorithms.grpo import clipped_loss


def gae_advantages(x, rl):
    m = x.loss_mask
    r = whiten(x.token_rewards, m, shift_mean=False) if rl.whiten_rewards else x.token_rewards
    adv, returns = gae(r, x.values, m, rl.gamma, rl.lam)  # (B, T) each
    x.outputs["returns"] = returns  # the critic's targets
    return whiten(adv, m) if rl.whiten_advantages else adv


PPO = rlvr.algorithm("ppo")(OnPolicyAlgorithm(
    name="ppo", summary="PPO: critic + GAE, KL-penalised per-token rewards, clipped policy and value losses",
    advantages=gae_advantages, policy_loss=clipped_loss, needs_critic=True, needs_groups=False,
    settings=frozenset({"clip_low", "clip_high", "gamma", "lam", "vf_coef", "value_clip", "critic",
                        "critic_lr", "whiten_rewards", "whiten_advantages"})))
