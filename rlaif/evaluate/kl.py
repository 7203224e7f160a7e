"""`rlaif eval kl`: KL(policy || reference) on the eval prompts, estimated from the policy's own samples.

KL(π || π_ref) = E_{y ~ π}[log π(y|x) - log π_ref(y|x)]: sample answers from the policy at temperature 1
(the distribution being measured, no top-p), sum the per-token log-ratio over each answer, average.
"""

from __future__ import annotations

import torch

from ..backends.hf import encode, eos_ids
from ..errors import UserError
from ..spec.inputs import Prompt
from ..spec.templates import Templates
from ..train.ppo import completion_mask, logprobs_from_logits, position_ids
from ..stats import mean_ci
from .winrate import _write, headline


def _load(path: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    return model, tokenizer


def render(tokenizer, templates: Templates, prompt: Prompt) -> str:
    """The text the model continues: its chat template, or the zero-shot Human:/Assistant: transcript."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
    return templates.render("completion/respond.j2", messages=prompt.messages, few_shot=[])


@torch.no_grad()
def sequence_logprobs(model, seq: torch.Tensor, attention: torch.Tensor, P: int, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over each completion; (B, P+T) ids -> (B,)."""
    logits = model(input_ids=seq, attention_mask=attention, position_ids=position_ids(attention)).logits  # (B, P+T, V)
    return (logprobs_from_logits(logits[:, P - 1:-1], seq[:, P:]) * mask).sum(1)


def policy_kl(policy: str, reference: str, prompts: list[Prompt], out_dir, samples: int = 4, max_new_tokens: int = 64,
              batch_size: int = 8, seed: int = 0, templates: Templates | None = None) -> dict:
    """Write kl.json (mean sequence KL in nats with a 95% interval, per-token KL) and kl.jsonl (per prompt)."""
    from ..backends.pool import resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    (model, tokenizer), (ref, ref_tokenizer) = _load(resolve_model(policy), device), _load(resolve_model(reference), device)
    if tokenizer.get_vocab() != ref_tokenizer.get_vocab():
        raise UserError(f"--reference {reference!r} has a different vocabulary from --policy {policy!r}; KL needs the same tokenizer")
    templates = templates or Templates()
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = torch.tensor(sorted(eos_ids(model, tokenizer)), device=device)
    torch.manual_seed(seed)
    kls, tokens, rows = [], 0, []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        texts = [render(tokenizer, templates, p) for p in chunk]
        batch = encode(tokenizer, texts, device)
        P = batch["input_ids"].shape[1]
        seq = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             num_return_sequences=samples, pad_token_id=pad, eos_token_id=stop_ids.tolist())  # (B*S, P+T)
        mask = completion_mask(seq[:, P:], stop_ids)  # (B*S, T)
        attention = torch.cat([batch["attention_mask"].repeat_interleave(samples, 0), mask.long()], dim=1)
        log_ratio = sequence_logprobs(model, seq, attention, P, mask) - sequence_logprobs(ref, seq, attention, P, mask)  # (B*S,)
        for b, p in enumerate(chunk):
            values = log_ratio[b * samples:(b + 1) * samples].tolist()
            kls += values
            rows.append({"prompt_id": p.id, "prompt": p.messages[-1]["content"], "kl": sum(values) / len(values),
                         "samples": values, "tokens": int(mask[b * samples:(b + 1) * samples].sum())})
        tokens += int(mask.sum())
    kl, ci95 = round(sum(kls) / len(kls), 4), mean_ci(kls)
    summary = {"kind": "kl", "headline": headline("kl", kl, ci95, unit="nats"), "policy": policy, "reference": reference,
               "prompts": len(prompts), "samples_per_prompt": samples, "max_new_tokens": max_new_tokens, "seed": seed,
               "kl": kl, "ci95": ci95, "kl_per_token": round(sum(kls) / max(tokens, 1), 5), "tokens": tokens}
    _write(out_dir, "kl", summary, rows)
    return summary
