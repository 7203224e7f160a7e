"""Render the exact prompts a constitution produces, for `rlaif constitution show`."""

from __future__ import annotations

from .backends.base import Sampling
from .constitution import Constitution, Principle
from .progress import Reporter
from .stages.common import StageContext
from .stages.critique import critique_request, revision_request
from .stages.respond import build_request
from .inputs import Prompt
from .templates import Templates


def _show(request) -> str:
    if request.prompt is not None:
        return request.prompt
    return "\n".join(f"[{m['role']}] {m['content']}" for m in request.messages)


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
            judge = Templates(templates_dir).render(f"{fmt}/judge.j2", messages=list(messages), principle=p, response_a="<response A>",
                                                    response_b="<response B>", chain_of_thought=False, reasoning=None)
            score = Templates(templates_dir).render(f"{fmt}/score.j2", messages=list(messages), principle=p, response=response)
            out += [rule, f"principle {p.name}: pairwise judge ({fmt}; P(A) and P(B) are read after the last character)", rule, judge]
            out += [rule, f"principle {p.name}: pointwise score ({fmt}; digits 1-10 are read next)", rule, score]
    return "\n".join(out)
