"""Reward functions for online RL (TRL's GRPO/RLOO `reward_funcs`): the AI judge's pointwise rating."""

from __future__ import annotations

from .constitution import Constitution
from .stages.common import prompt_format
from .stages.judge import draw_principles
from .stages.score import rate
from .templates import Templates


def _messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role") == "assistant")


class JudgeScoreReward:
    """`reward(prompts, completions) -> list[float]`: the judge's 1-10 rating, averaged over k principles.

    Works on batches (two log-probability calls per batch) and on TRL's plain-text or conversational
    rows. An answer the judge cannot rate gets `unrated` (default 1.0, the worst rating).
    """

    def __init__(self, generator, constitution: Constitution, templates: Templates | None = None, principles_per_item: int = 1,
                 seed: int = 0, prompt_format_setting: str = "auto", unrated: float = 1.0):
        self.generator, self.constitution = generator, constitution
        self.templates = templates or Templates()
        self.k, self.seed, self.unrated = principles_per_item, seed, unrated
        self.fmt = prompt_format(prompt_format_setting, generator)
        self.__name__ = f"judge_score_{constitution.name}"  # TRL logs reward functions by name

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        items, owners = [], []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            text = _text(completion)
            for p in draw_principles(self.constitution, self.seed, f"{i}:{text}", self.k):
                items.append((_messages(prompt), text, p))
                owners.append(i)
        totals, counts = [0.0] * len(prompts), [0] * len(prompts)
        for owner, (score, _) in zip(owners, rate(self.templates, self.generator, self.fmt, items)):
            if score is not None:
                totals[owner] += score
                counts[owner] += 1
        return [t / c if c else self.unrated for t, c in zip(totals, counts)]
