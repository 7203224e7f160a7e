"""Reward functions for online RL (TRL's GRPO/RLOO `reward_funcs`): the AI judge's pointwise rating.

Also `load_judge`, the judge a training config names (its reward's or its watch's), shared by rlaif.train and
rlaif.train.watch.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..spec.config import ModelConfig, resolve_path
from ..spec.constitution import Constitution, load_constitution
from ..backends.pool import ModelPool
from ..stages.common import prompt_format
from ..stages.judge import draw_principles
from ..stages.score import rate
from ..spec.templates import Templates


def _messages(prompt) -> list[dict]:
    """A conversation as messages: a list of messages as it is; a plain string is the user's request.

    Never pass a chat-rendered string here (it would be wrapped, and rendered, a second time): callers keep
    TRL's conversational prompts as messages (rlaif.train.ppo does too)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role") == "assistant")


def load_judge(judge, config_file: str):
    """A reward's or watch's `judge:` block: (generator (fp32 on hf), constitution (relative to the file), pool)."""
    pool = ModelPool()
    dtype = "float32" if judge.backend == "hf" else "auto"  # auto: bf16 only where native (rlaif.hardware)
    generator = pool.get(ModelConfig(model=judge.model, backend=judge.backend, dtype=dtype))
    return generator, load_constitution(resolve_path(judge.constitution, Path(config_file).resolve().parent)), pool


class JudgeScoreReward:
    """`reward(prompts, completions) -> list[float]`: the judge's rating, averaged over k principles.

    Works on batches (one log-probability call per batch) and on TRL's plain-text or conversational rows (a
    prompt may be a list of messages). The k principles are drawn per prompt and per training step, so every
    completion of a GRPO/RLOO group is rated on the same rubric and the group-relative advantage does not
    reflect which principle each one drew; the step comes from TRL's `trainer_state`, else from a `step=`
    argument, else it is the number of calls so far. The reward is d-RLAIF's: the 1-10 rating mapped linearly
    onto [-1, 1] ((rating - 5.5) / 4.5), so the KL coefficient means the same whatever the rating scale;
    `raw=True` keeps the 1-10 rating. An answer the judge cannot rate (digit mass below `min_digit_mass`) gets
    `unrated` (default: the worst reward).
    """

    def __init__(self, generator, constitution: Constitution, templates: Templates | None = None, principles_per_item: int = 1,
                 seed: int = 0, prompt_format_setting: str = "auto", unrated: float | None = None, raw: bool = False,
                 min_digit_mass: float = 0.5):
        self.generator, self.constitution = generator, constitution
        self.templates = templates or Templates()
        self.k, self.seed, self.raw, self.min_mass = principles_per_item, seed, raw, min_digit_mass
        self.unrated = unrated if unrated is not None else (1.0 if raw else -1.0)
        self.fmt = prompt_format(prompt_format_setting, generator)
        self.calls = 0
        self.__name__ = f"judge_score_{constitution.name}"  # TRL logs reward functions by name

    def scale(self, rating: float) -> float:
        """The reward for a 1-10 rating: in [-1, 1], or the rating itself with `raw`."""
        return rating if self.raw else (rating - 5.5) / 4.5

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        state = kwargs.get("trainer_state")
        step = state.global_step if state is not None else kwargs.get("step", self.calls)
        self.calls += 1
        items, owners = [], []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            messages = _messages(prompt)
            key = f"{step}:{json.dumps(messages, sort_keys=True, default=str)}"  # the prompt, not the completion
            for p in draw_principles(self.constitution, self.seed, key, self.k):
                items.append((messages, _text(completion), p))
                owners.append(i)
        totals, counts = [0.0] * len(prompts), [0] * len(prompts)
        for owner, (score, _, _) in zip(owners, rate(self.templates, self.generator, self.fmt, items, self.min_mass)):
            if score is not None:
                totals[owner] += self.scale(score)
                counts[owner] += 1
        return [t / c if c else self.unrated for t, c in zip(totals, counts)]


class RewardModelReward:
    """`reward(prompts, completions) -> list[float]` from a reward model directory (`rlaif train reward` output)."""

    def __init__(self, path: str, batch_size: int = 8, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "right"  # the classifier reads the last non-pad token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(self.device).eval()
        self.batch_size = batch_size
        self.__name__ = f"reward_model_{path}"

    def ids(self, prompt, completion) -> list[int]:
        """Token ids as `rlaif train reward` (TRL's RewardTrainer) made them: the chat template over prompt + answer,
        applied once and writing its own special tokens; without a template, the text with the tokenizer's own."""
        if self.tokenizer.chat_template:
            messages = _messages(prompt) + [{"role": "assistant", "content": _text(completion)}]
            return self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return self.tokenizer((prompt if isinstance(prompt, str) else "") + _text(completion))["input_ids"]

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        import torch

        rows = [self.ids(p, c)[: self.tokenizer.model_max_length] for p, c in zip(prompts, completions)]
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                batch = self.tokenizer.pad({"input_ids": rows[start : start + self.batch_size]}, return_tensors="pt")
                scores += self.model(**batch.to(self.device)).logits[:, 0].float().tolist()
        return scores
