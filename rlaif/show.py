"""Render the exact prompts a constitution produces, for `rlaif constitution show`."""

from __future__ import annotations

from .backends.base import Sampling
from .config import JudgeConfig
from .constitution import Constitution, Principle
from .progress import Reporter
from .stages.common import StageContext
from .stages.critique import critique_request, revision_request
from .stages.judge import Candidate, Comparison
from .stages.judge import request as judge_request
from .stages.score import request as score_request
from .stages.respond import build_request
from .inputs import Prompt
from .templates import Templates


def _show(request) -> str:
    if request.prompt is not None:
        return request.prompt + request.prefix
    turns = [f"[{m['role']}] {m['content']}" for m in request.messages]
    return "\n".join(turns + ([f"[assistant, continued] {request.prefix}"] if request.prefix else []))


def render_prompts(c: Constitution, principles: list[Principle], fmt: str, templates_dir, prompt: str, response: str) -> str:
    """The respond prompt once, then each principle's critique, revision and comparison prompts."""
    ctx = StageContext(store=None, constitution=c, templates=Templates(templates_dir), reporter=Reporter())
    messages = ({"role": "user", "content": prompt},)
    s = Sampling()
    rule = "=" * 78
    out = [rule, f"respond ({fmt})", rule, _show(build_request(ctx, Prompt("-", messages), fmt, s))]
    for p in principles:
        out += [rule, f"principle {p.name}: critique ({fmt})", rule, _show(critique_request(ctx, fmt, list(messages), response, p, s))]
        out += [rule, f"principle {p.name}: revision ({fmt})", rule,
                _show(revision_request(ctx, fmt, list(messages), response, "<critique>", p, s))]
        if p.comparison:
            comparison = Comparison("-", messages, Candidate("a", "<response A>"), Candidate("b", "<response B>"), "samples")
            judge = judge_request(ctx, fmt, comparison, comparison.a, comparison.b, p, JudgeConfig(), None, s, True)
            score = score_request(ctx.templates, fmt, list(messages), response, p, s)
            out += [rule, f"principle {p.name}: pairwise judge ({fmt}; P(A) and P(B) are read after the last character)", rule,
                    _show(judge)]
            out += [rule, f"principle {p.name}: pointwise score ({fmt}; ratings 1-10 are read next)", rule, _show(score)]
    return "\n".join(out)
