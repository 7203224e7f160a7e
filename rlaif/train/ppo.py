"""PPO for language models (RLHF-style): a policy with a value head, a per-token KL penalty against a frozen
reference, GAE, clipped policy and value losses, and an adaptive KL coefficient.

Follows Ziegler et al. (2019), Ouyang et al. (2022) and "The N Implementation Details of RLHF with PPO"
(Huang et al.). TRL 1.16 has no PPO trainer, so this file is the project's own; the tensor math is in ppo_math.py.
Prompts are conversations (or raw text), tokenized once (prompt_ids); the reward sees them as given. Shapes: B sequences,
P prompt tokens (left-padded), T completion tokens (right-padded after the first EOS), V vocabulary.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from ..rundir import atomic
from .ppo_math import AdaptiveKLController, FixedKLController, completion_mask, entropy_from_logits, gae, logprobs_from_logits, masked_mean, masked_whiten, per_token_rewards, policy_loss, value_loss

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass(frozen=True)
class PPOConfig:
    """Every PPO knob; checked on construction (all bad values reported together)."""

    learning_rate: float = 1e-5  # AdamW, shared by the policy and the value head
    batch_size: int = 16  # prompts per rollout
    mini_batch_size: int = 4  # sequences per optimizer step; must divide batch_size
    ppo_epochs: int = 4  # passes over each rollout
    max_new_tokens: int = 64  # completion length cap
    temperature: float = 1.0  # sampling temperature; logprobs are taken from logits / temperature too
    top_k: int = 0  # 0: off. Truncated sampling makes the rollout slightly off-policy; keep off unless needed
    top_p: float = 1.0  # 1.0: off
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    cliprange: float = 0.2  # policy ratio clip
    cliprange_value: float = 0.2  # value clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss
    kl_coef: float = 0.1  # initial KL penalty coefficient (beta)
    kl_mode: Literal["fixed", "adaptive"] = "adaptive"  # adaptive: Ziegler et al.'s controller steers toward target_kl
    target_kl: float = 6.0  # adaptive: the KL (nats per sequence) to steer toward
    kl_horizon: int = 10000  # adaptive: sequences over which the coefficient adapts
    whiten_advantages: bool = True  # normalise advantages over each rollout
    max_grad_norm: float | None = 1.0  # gradient clipping; None: off
    total_steps: int = 100  # rollouts to run
    seed: int = 0
    max_prompt_length: int = 512  # longer prompts keep their last tokens
    log_every: int = 1  # rollouts between log lines
    bf16: bool = False  # forward passes (rollouts included) under bfloat16 autocast; weights, losses and optimizer stay fp32
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% more compute
    output_dir: str = "outputs/ppo"

    def __post_init__(self):
        v = vars(self)
        errors = [f"{k} must be > 0, got {v[k]}" for k in
                  ("learning_rate", "temperature", "cliprange", "cliprange_value", "target_kl") if not v[k] > 0]
        errors += [f"{k} must be >= 1, got {v[k]}" for k in ("batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens",
                   "kl_horizon", "total_steps", "max_prompt_length", "log_every") if not v[k] >= 1]
        errors += [f"{k} must be >= 0, got {v[k]}" for k in ("vf_coef", "kl_coef", "top_k") if not v[k] >= 0]
        errors += [f"{k} must be in [0, 1], got {v[k]}" for k in ("gamma", "lam") if not 0 <= v[k] <= 1]
        if not 0 < self.top_p <= 1:
            errors.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.mini_batch_size >= 1 and self.batch_size % self.mini_batch_size:
            errors.append(f"mini_batch_size ({self.mini_batch_size}) must divide batch_size ({self.batch_size})")
        if self.kl_mode not in ("fixed", "adaptive"):
            errors.append(f"kl_mode must be 'fixed' or 'adaptive', got {self.kl_mode!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            errors.append(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if errors:
            raise ValueError("PPOConfig: " + "; ".join(errors))


# ----------------------------------------------------------------------------- model


def prompt_ids(tokenizer, prompt, max_length: int) -> list[int]:
    """A prompt's token ids from one tokenization, as TRL's trainers make them: a conversation through the chat
    template with add_generation_prompt (the template writes BOS itself, so no special tokens are added again);
    text through the tokenizer with its special tokens, unless it already starts with the BOS text. A prompt longer
    than max_length keeps its last tokens, after its leading BOS."""
    if isinstance(prompt, str):
        bos_text = prompt.startswith(tokenizer.bos_token) if tokenizer.bos_token else False
        ids = tokenizer(prompt, add_special_tokens=not bos_text)["input_ids"]
    else:
        ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    if len(ids) <= max_length:
        return ids
    head = ids[:1] if tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else []
    return head + ids[len(ids) - max_length + len(head):]  # the model was trained with a BOS: keep it


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... counted over real tokens only, so a left-padded prompt sees the positions generate() gave it."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _no_dropout(model: nn.Module) -> None:
    """Zero every dropout probability, so the model can sit in train mode (which checkpointing needs) deterministically."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)


def load_lm(model_or_path):
    """A path becomes an AutoModelForCausalLM in float32 (the master weights); a model is used as it is."""
    from transformers import AutoModelForCausalLM

    if isinstance(model_or_path, (str, Path)):
        return AutoModelForCausalLM.from_pretrained(model_or_path, dtype=torch.float32)
    return model_or_path


class PolicyWithValue(nn.Module):
    """A causal LM plus a value head, Linear(hidden, 1), on the last hidden state."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # values start at 0: no random critic noise in the first advantages
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(B, L) ids and mask -> logits (B, L, V), values (B, L)."""
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                      output_hidden_states=True)
        hidden = out.hidden_states[-1].to(self.value_head.weight.dtype)  # (B, L, H), after the final norm
        return out.logits, self.value_head(hidden).squeeze(-1)

    @classmethod
    def from_pretrained(cls, path: str) -> "PolicyWithValue":
        """Load a save()d policy; the value head too when VALUE_HEAD_FILE is there (else a fresh one)."""
        from safetensors.torch import load_file

        model = cls(load_lm(path))
        if (Path(path) / VALUE_HEAD_FILE).exists():
            model.value_head.load_state_dict(load_file(str(Path(path) / VALUE_HEAD_FILE)))
        return model


# ----------------------------------------------------------------------------- trainer


class PPOTrainer:
    """Rollout, score, KL-penalised rewards, GAE, then ppo_epochs of clipped updates, one rollout per step()."""

    def __init__(self, policy_model_or_path, tokenizer, reward_fn: Callable[[list, list], list], config: PPOConfig,
                 ref_model=None, peft_config=None):
        torch.manual_seed(config.seed)
        self.config, self.tokenizer, self.reward_fn = config, tokenizer, reward_fn
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        lm = load_lm(policy_model_or_path)
        if peft_config is not None:  # LoRA: only the adapters (and the value head) train
            from peft import get_peft_model

            lm = get_peft_model(lm, peft_config)
        self.policy = (lm if isinstance(lm, PolicyWithValue) else PolicyWithValue(lm)).to(self.device)
        # the reference: a frozen copy of the policy as it starts, unless one is given; with LoRA, the same
        # model with its adapters switched off (no second copy of the weights)
        self.ref = None
        if ref_model is not None or peft_config is None:
            self.ref = (load_lm(ref_model) if ref_model is not None else copy.deepcopy(self.policy.lm)).to(self.device)
            self.ref.requires_grad_(False)
            self.ref.eval()
        # eval mode throughout, training included: dropout would make the new/old logprob ratio noisy
        self.policy.eval()
        if config.gradient_checkpointing:  # HF checkpoints only in train mode, so dropout is switched off instead
            _no_dropout(self.policy.lm)
            self.policy.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = self.policy.lm.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.eos_ids = torch.tensor(sorted(e for e in eos if e is not None), device=self.device)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, eps=1e-5, weight_decay=0.0)
        self.kl_ctl = (AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
                       if config.kl_mode == "adaptive" else FixedKLController(config.kl_coef))
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.history: list[dict] = []

    def _autocast(self):
        """bfloat16 autocast for forward passes when config.bf16 (a no-op otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    @torch.no_grad()
    def rollout(self, prompts: list):
        """Sample one completion per prompt: ids (B, P+T), attention mask (B, P+T), P, completion mask (B, T), texts.

        A prompt is a conversation (a list of messages, rendered with the chat template) or raw text (prompt_ids).
        """
        ids = [prompt_ids(self.tokenizer, x, self.config.max_prompt_length) for x in prompts]
        P, pad = max(map(len, ids)), self.tokenizer.pad_token_id
        prompt = torch.tensor([[pad] * (P - len(x)) + x for x in ids], device=self.device)  # left-padded, (B, P)
        prompt_mask = torch.tensor([[0] * (P - len(x)) + [1] * len(x) for x in ids], device=self.device)
        c = self.config
        with self._autocast():
            seq = self.policy.lm.generate(  # every knob explicit: the model's generation_config must not change the sampler
                input_ids=prompt, attention_mask=prompt_mask, do_sample=True, max_new_tokens=c.max_new_tokens,
                temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, repetition_penalty=1.0, min_new_tokens=0,
                pad_token_id=pad, eos_token_id=self.eos_ids.tolist(), use_cache=True)  # (B, P+T)
        tokens = seq[:, P:]  # (B, T)
        mask = completion_mask(tokens, self.eos_ids)  # (B, T)
        attention = torch.cat([prompt_mask, mask.long()], dim=1)  # (B, P+T)
        lengths = mask.sum(1).long().tolist()
        texts = self.tokenizer.batch_decode([t[:n] for t, n in zip(tokens.tolist(), lengths)], skip_special_tokens=True)
        return seq, attention, P, mask, texts

    def _evaluate(self, seq, attention, P):
        """Of the completion tokens: policy logprobs (B, T), values (B, T), entropy (B, T)."""
        with self._autocast():
            logits, values = self.policy(seq, attention)  # (B, P+T, V), (B, P+T)
        logits = logits[:, P - 1:-1].float() / self.config.temperature  # logits at position i predict token i + 1
        return logprobs_from_logits(logits, seq[:, P:]), values[:, P - 1:-1].float(), entropy_from_logits(logits)

    def _ref_logprobs(self, seq, attention, P):
        """Reference logprobs (B, T) of the completion tokens."""
        with self._autocast():
            if self.ref is None:
                with torch.no_grad(), self.policy.lm.disable_adapter():
                    logits = self.policy.lm(input_ids=seq, attention_mask=attention, position_ids=position_ids(attention)).logits
            else:
                logits = self.ref(input_ids=seq, attention_mask=attention, position_ids=position_ids(attention)).logits
        return logprobs_from_logits(logits[:, P - 1:-1].float() / self.config.temperature, seq[:, P:])

    def step(self, prompts: list) -> dict:
        """One PPO iteration on one rollout of `prompts`; returns its stats. The reward sees the prompts as given."""
        c, start = self.config, time.time()
        seq, attention, P, mask, texts = self.rollout(prompts)
        scores = [float(s) for s in self.reward_fn(list(prompts), texts)]
        if len(scores) != len(texts):
            raise ValueError(f"reward_fn returned {len(scores)} rewards for {len(texts)} completions")
        score = torch.tensor(scores, device=self.device)  # (B,)
        with torch.no_grad():
            chunks = [(*self._evaluate(s, a, P), self._ref_logprobs(s, a, P))  # in mini-batches: bounded memory
                      for s, a in zip(seq.split(c.mini_batch_size), attention.split(c.mini_batch_size))]
            old_logprobs, old_values, entropy, ref_logprobs = (torch.cat(x) for x in zip(*chunks))  # (B, T) each
            kl = ((old_logprobs - ref_logprobs) * mask).sum(1).mean().item()  # nats per sequence
            rewards = per_token_rewards(score, old_logprobs, ref_logprobs, mask, self.kl_ctl.value)
            advantages, returns = gae(rewards, old_values, mask, c.gamma, c.lam)
            if c.whiten_advantages:
                advantages = masked_whiten(advantages, mask)
        stats = []
        self.policy.train(c.gradient_checkpointing)  # HF checkpoints only in train mode; dropout is zeroed for it
        for _ in range(c.ppo_epochs):
            for idx in torch.randperm(len(seq), generator=self.shuffle).split(c.mini_batch_size):
                idx = idx.to(self.device)
                logprobs, values, _ = self._evaluate(seq[idx], attention[idx], P)
                pg_loss, pg_clipfrac, approx_kl = policy_loss(logprobs, old_logprobs[idx], advantages[idx], mask[idx],
                                                              c.cliprange)
                vf_loss, vf_clipfrac = value_loss(values, old_values[idx], returns[idx], mask[idx], c.cliprange_value)
                self.optimizer.zero_grad()
                (pg_loss + c.vf_coef * vf_loss).backward()
                if c.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                stats.append(torch.stack([pg_loss.detach(), vf_loss.detach(), pg_clipfrac, vf_clipfrac, approx_kl]))
        self.policy.eval()
        pg_loss, vf_loss, pg_clipfrac, vf_clipfrac, approx_kl = torch.stack(stats).mean(0).tolist()
        kl_coef = self.kl_ctl.value  # the coefficient this rollout's rewards used
        self.kl_ctl.update(kl, len(seq))
        # `loss`: what the optimizer minimised, the mean of pg_loss + vf_coef * vf_loss over the mini-batches
        return {"score": score.mean().item(), "kl": kl, "entropy": masked_mean(entropy, mask).item(),
                "loss": pg_loss + c.vf_coef * vf_loss, "policy_loss": pg_loss, "value_loss": vf_loss,
                "policy_clipfrac": pg_clipfrac,
                "value_clipfrac": vf_clipfrac, "approx_kl": approx_kl, "kl_coef": kl_coef,
                "completion_length": mask.sum(1).mean().item(), "seconds": time.time() - start}

    def train(self, prompt_list: list, log=print, watch=None) -> list[dict]:
        """total_steps rollouts of batch_size prompts, cycling through prompt_list; returns (and keeps) the history.

        `watch` (rlaif.train.watch.Watch) judges the policy against its start whenever a check is due.
        """
        if not prompt_list:
            raise ValueError("PPO needs at least one prompt")
        c, n = self.config, len(prompt_list)
        if watch is not None:
            watch.begin(self.policy.lm)
        for step in range(c.total_steps):
            batch = [prompt_list[(step * c.batch_size + i) % n] for i in range(c.batch_size)]
            stats = {"step": step + 1, **self.step(batch)}
            self.history.append(stats)
            if watch is not None:
                watch.observe(stats["score"], stats["kl"])
                if watch.due(step + 1):
                    stats["judge_win_rate"] = watch.check(step + 1, self.policy.lm)["judge_win_rate"]
            if (step + 1) % c.log_every == 0 or step + 1 == c.total_steps:
                log(f"ppo {step + 1}/{c.total_steps}: score {stats['score']:.4f}, kl {stats['kl']:.3f}, "
                    f"kl_coef {stats['kl_coef']:.4f}, entropy {stats['entropy']:.3f}, policy_loss {stats['policy_loss']:.4f}, "
                    f"value_loss {stats['value_loss']:.4f}, clipfrac {stats['policy_clipfrac']:.3f}")
        return self.history

    def save(self, output_dir: str) -> None:
        """The policy (save_pretrained: loads with AutoModelForCausalLM), its value head (VALUE_HEAD_FILE), the tokenizer."""
        from safetensors.torch import save_file

        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.policy.lm.save_pretrained(output_dir)
        save_file({k: v.contiguous().cpu() for k, v in self.policy.value_head.state_dict().items()},
                  str(Path(output_dir) / VALUE_HEAD_FILE))
        self.tokenizer.save_pretrained(output_dir)


def train_ppo(model_path: str, prompts: list, reward_fn, config: PPOConfig, log=print, peft_config=None,
              tokenizer=None, watch=None) -> list[dict]:
    """Load the model and tokenizer, train with PPO, save to config.output_dir (plus ppo_history.jsonl); the history."""
    from transformers import AutoTokenizer

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
    trainer = PPOTrainer(model_path, tokenizer, reward_fn, config, peft_config=peft_config)
    log(f"ppo: {config.total_steps} rollouts of {config.batch_size} prompts ({len(prompts)} distinct), "
        f"kl {config.kl_mode} from {config.kl_coef}, on {trainer.device}")
    history = trainer.train(prompts, log, watch)
    trainer.save(config.output_dir)
    atomic.write_jsonl(Path(config.output_dir) / "ppo_history.jsonl", history)
    log(f"ppo: saved the policy, value head and tokenizer to {config.output_dir}")
    return history
