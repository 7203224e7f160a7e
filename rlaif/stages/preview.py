"""The exact requests the stages build, for `rlaif constitution show` and the plan-time template check."""

from __future__ import annotations

from collections.abc import Iterator

from ..backends.base import Request, Sampling
from ..spec.config import JudgeConfig
from ..spec.constitution import Constitution, Principle
from ..progress import Reporter
from .common import StageContext
from .critique import critique_request, revision_request
from .judge import Candidate, Comparison
from .judge import request as judge_request
from .score import request as score_request
from .respond import build_request
from ..spec.inputs import Prompt
from ..spec.templates import Templates

FORMATS = ("completion", "chat")  # `auto` picks one only once the engine is loaded, so plan time checks both


def requests(ctx: StageContext, principles: list[Principle], fmt: str, messages: tuple, response: str,
             judge_cfg: JudgeConfig) -> Iterator[tuple[str, Request]]:
    """(title, request): respond once, then each principle's critique, revision, judge and score requests."""
    s = Sampling()
    yield f"respond ({fmt})", build_request(ctx, Prompt("-", messages), fmt, s)
    for p in principles:
        yield f"principle {p.name}: critique ({fmt})", critique_request(ctx, fmt, list(messages), response, p, s)
        yield f"principle {p.name}: revision ({fmt})", revision_request(ctx, fmt, list(messages), response, "<critique>", p, s)
        if not p.comparison:
            continue
        c = Comparison("-", messages, Candidate("a", "<response A>"), Candidate("b", "<response B>"), "samples")
        title = f"principle {p.name}: pairwise judge ({fmt}; P(A) and P(B) are read after the last character)"
        if judge_cfg.chain_of_thought:  # the judge reasons first (no verdict opened), then answers with its reasoning shown
            yield f"principle {p.name}: judge reasoning ({fmt})", judge_request(ctx, fmt, c, c.a, c.b, p, judge_cfg, None, s, False)
            yield title, judge_request(ctx, fmt, c, c.a, c.b, p, judge_cfg, "<reasoning>", s, True)
        else:
            yield title, judge_request(ctx, fmt, c, c.a, c.b, p, judge_cfg, None, s, True)
        yield (f"principle {p.name}: pointwise score ({fmt}; ratings 1-10 are read next)",
               score_request(ctx.templates, fmt, list(messages), response, p, s))


def check_templates(templates: Templates, constitution: Constitution, messages: tuple, few_shot: int | None,
                    judge_cfg: JudgeConfig | None) -> None:
    """Build every request of every stage in both formats: a broken template fails (UserError) before any model loads."""
    ctx = StageContext(store=None, constitution=constitution, templates=templates, reporter=None, few_shot=few_shot)
    for fmt in FORMATS:
        for _ in requests(ctx, list(constitution.principles), fmt, messages, "<response>", judge_cfg or JudgeConfig()):
            pass


def _show(request) -> str:
    if request.prompt is not None:
        return request.prompt + request.prefix
    turns = [f"[{m['role']}] {m['content']}" for m in request.messages]
    return "\n".join(turns + ([f"[assistant, continued] {request.prefix}"] if request.prefix else []))


def render_prompts(c: Constitution, principles: list[Principle], fmt: str, templates_dir, prompt: str, response: str) -> str:
    """The respond prompt once, then each principle's critique, revision and comparison prompts."""
    ctx = StageContext(store=None, constitution=c, templates=Templates(templates_dir), reporter=Reporter())
    rule = "=" * 78
    out = []
    for title, request in requests(ctx, principles, fmt, ({"role": "user", "content": prompt},), response, JudgeConfig()):
        out += [rule, title, rule, _show(request)]
    return "\n".join(out)
