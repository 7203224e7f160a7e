"""Stage `respond`: sample `n` responses per prompt."""

from __future__ import annotations

from ..backends.base import Completion, Request, Sampling
from ..spec.config import COMPLETION_STOP, RespondConfig
from ..spec.inputs import Prompt
from ..rundir.store import record_key
from .common import StageContext, derive_seed, few_shot_examples, prompt_format, resume

TEMPLATE = "completion/respond.j2"


def build_request(ctx: StageContext, prompt: Prompt, fmt: str, sampling: Sampling) -> Request:
    """Chat models get the conversation as is; base models a few-shot Human:/Assistant: transcript."""
    if fmt == "chat":
        return Request(messages=prompt.messages, sampling=sampling)
    text = ctx.templates.render(TEMPLATE, messages=prompt.messages, few_shot=few_shot_examples(ctx, None))
    return Request(prompt=text, sampling=sampling)


def to_record(prompt: Prompt, sample: int, output, completion: Completion, model_id: str, fmt: str) -> dict:
    """What one response record holds."""
    return {
        "prompt_id": prompt.id,
        "messages": list(prompt.messages),
        "sample": sample,
        "text": output.text.strip(),
        "tokens": output.tokens,
        "finish_reason": output.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "model": model_id,
        "format": fmt,
    }


def respond(ctx: StageContext, generator, prompts: list[Prompt], cfg: RespondConfig, format_setting: str = "auto") -> list[dict]:
    """Responses for every prompt (stored ones reused), in prompt order, `n` per prompt."""
    fmt = prompt_format(format_setting, generator)
    stop = cfg.stop if cfg.stop is not None else (COMPLETION_STOP if fmt == "completion" else ())
    settings = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "stop": list(stop)}
    if cfg.min_p:  # in the key only when set: records sampled without it keep their keys
        settings["min_p"] = cfg.min_p
    template = ctx.templates.sha256(TEMPLATE) if fmt == "completion" else "chat"
    few_shot = [e["prompt"] + e["response"] for e in few_shot_examples(ctx, None)] if fmt == "completion" else []

    def key(prompt: Prompt, sample: int) -> str:
        return record_key(stage="respond", input=prompt.id, sample=sample, template=template, few_shot=few_shot,
                          model=generator.model_id, sampling=settings, seed=ctx.seed, format=fmt)

    keys = {(p.id, i): key(p, i) for p in prompts for i in range(cfg.n)}

    def missing(p: Prompt, stored: dict) -> tuple[Prompt, list[int]] | None:
        left = [i for i in range(cfg.n) if keys[p.id, i] not in stored]
        return (p, left) if left else None

    def make(chunk: list[tuple[Prompt, list[int]]], advance) -> dict[str, dict]:
        requests = [
            build_request(ctx, p, fmt, Sampling(n=len(left), temperature=cfg.temperature, top_p=cfg.top_p, min_p=cfg.min_p,
                                                max_tokens=cfg.max_tokens, stop=tuple(stop),
                                                seed=derive_seed(ctx.seed, p.id, left)))
            for p, left in chunk
        ]
        return {keys[p.id, i]: to_record(p, i, output, completion, generator.model_id, fmt)
                for (p, left), completion in zip(chunk, generator.generate(requests, advance))
                for i, output in zip(left, completion.outputs)}

    records = resume(ctx, "respond", prompts, lambda p: [keys[p.id, i] for i in range(cfg.n)], make, missing, generator=generator)
    return [records[keys[p.id, i]] | {"key": keys[p.id, i]} for p in prompts for i in range(cfg.n)]
