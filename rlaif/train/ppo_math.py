"""PPO's math as pure functions on tensors: log-probabilities, masks, per-token rewards, GAE, the clipped policy and
value losses, and the KL coefficient controllers (rlaif.train.ppo uses them; tests/train/test_ppo.py pins each by hand).

Shapes: B sequences, T completion tokens, V vocabulary.
"""

from __future__ import annotations

import torch


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) = logits[token] - logsumexp(logits); (B, T, V), (B, T) -> (B, T)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def completion_mask(tokens: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """1 up to and including each row's first EOS, 0 after (generate() pads finished rows); (B, T) -> (B, T) float."""
    is_eos = torch.isin(tokens, eos_ids).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).float()  # no EOS strictly before t


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(l) - sum softmax(l) * l; (B, T, V) -> (B, T)."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * m) / sum(m): the mean over the entries where mask is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8), mean and (population) variance over the masked entries; masked-out entries -> 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def per_token_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> torch.Tensor:
    """r_t = -kl_coef * (logp_t - ref_logp_t) on real tokens, plus the sequence score at each row's last real token.

    score (B,), logprobs/ref_logprobs/mask (B, T) -> rewards (B, T), 0 where mask is 0.
    """
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask  # (B, T)
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # (B,) index of each row's last 1
    rewards[torch.arange(len(score)), last] += score.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation, backwards over t; positions where mask is 0 end the episode.

    delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t;  A_t = delta_t + gamma * lam * m_{t+1} * A_{t+1};
    returns R_t = A_t + V_t. (B, T) each -> advantages (B, T), returns (B, T), both 0 where mask is 0.
    """
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # A_{t+1}, (B,)
    for t in reversed(range(T)):
        next_mask = mask[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        running = delta + gamma * lam * next_mask * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, advantages + values


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float):
    """Clipped surrogate: mean over real tokens of max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)), ratio = exp(logp - old).

    Also returns clipfrac (share of tokens where the clipped term is the larger) and approx_kl, the k3 estimate of
    KL(old || new): mean of (ratio - 1) - log ratio (>= 0). All inputs (B, T); outputs are scalars.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(values, old_values, returns, mask, cliprange_value: float):
    """0.5 * mean over real tokens of max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -c, c).

    Also returns clipfrac: the share of tokens where the clipped error is the larger. Inputs (B, T); scalars out.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    return loss, masked_mean((clipped_error > unclipped_error).float(), mask).detach()


class FixedKLController:
    """kl_coef stays where it started."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """No change."""


class AdaptiveKLController:
    """Ziegler et al.: err = clip(KL / target - 1, -0.2, 0.2); kl_coef *= 1 + err * n_steps / horizon."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move kl_coef toward the value that keeps the KL at target; n_steps: sequences in the rollout just used."""
        err = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + err * n_steps / self.horizon
