"""Plain transformers `generate`: the fallback backend and the one the tests use."""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .base import Completion, Output, ProgressFn, Request, truncate_at_stop
from .options import option_logprobs, prompt_text, reads, spellings

_DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends an answer: the tokenizer's EOS and the generation config's (chat models list end-of-turn there)."""
    config = getattr(model, "generation_config", None)
    eos = config.eos_token_id if config is not None else None
    return {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}


def encode(tokenizer, texts: list[str], device) -> dict:
    """Tokenize a padded batch; chat templates already spell out BOS, so it is not added twice."""
    chat = bool(tokenizer.chat_template) and tokenizer.bos_token and texts[0].startswith(tokenizer.bos_token)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    return {k: v.to(device) for k, v in batch.items()}


class HFGenerator:
    """Batched sampling with `model.generate`; left padding so every row ends at its prompt."""

    def __init__(self, model: str, dtype: str = "bfloat16", batch_size: int = 16, device: str = "cpu"):
        self.model_id = model
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=_DTYPES[dtype]).to(device).eval()
        self.has_chat_template = bool(self.tokenizer.chat_template)
        self.logit_dtype = "float32"  # options are read through an fp32 head whatever the model's dtype (next_logprobs)
        self._eos_ids = eos_ids(self.model, self.tokenizer)  # generate stops at any of them

    def _text(self, request: Request) -> str:
        return prompt_text(self.tokenizer, request)

    def _encode(self, texts: list[str]) -> dict:
        return encode(self.tokenizer, texts, self.device)

    @torch.inference_mode()
    def generate(self, requests: list[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """Sample each request; requests with equal sampling settings are batched together."""
        results: list[Completion | None] = [None] * len(requests)
        groups: dict = {}  # per-request seeds differ, so batch on everything but the seed
        for i, r in enumerate(requests):
            groups.setdefault(replace(r.sampling, seed=None), []).append(i)
        for sampling, idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                texts = [self._text(requests[i]) for i in chunk]
                seeds = [requests[i].sampling.seed for i in chunk]
                seed = None if None in seeds else hash(tuple(seeds)) % 2**31
                done = self._generate_chunk(texts, replace(sampling, seed=seed))
                new_tokens = 0
                for i, completion in zip(chunk, done):
                    results[i] = completion
                    new_tokens += sum(o.tokens for o in completion.outputs)
                if progress:
                    progress(len(chunk), new_tokens)
        return results

    def _generate_chunk(self, texts: list[str], s) -> list[Completion]:
        batch = self._encode(texts)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        sample = s.temperature > 0
        out = self.model.generate(
            **batch,
            do_sample=sample,
            temperature=s.temperature if sample else None,
            top_p=s.top_p if sample else None,
            min_p=(s.min_p or None) if sample else None,
            top_k=0 if sample else None,
            max_new_tokens=s.max_tokens,
            num_return_sequences=s.n,
            stop_strings=list(s.stop) or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        prompt_len = batch["input_ids"].shape[1]
        generated = out[:, prompt_len:]  # (batch * n, new_tokens)
        completions = []
        for b, mask in enumerate(batch["attention_mask"]):
            outputs = []
            for row in generated[b * s.n : (b + 1) * s.n]:
                ids = row.tolist()
                end = next((k for k, t in enumerate(ids) if t in self._eos_ids), None)
                ended = end is not None
                ids = ids[:end] if ended else ids
                while ids and ids[-1] == self.tokenizer.pad_token_id:
                    ids.pop()
                text, stopped = truncate_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), s.stop)
                if stopped:  # count only the tokens up to the stop string
                    ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                finish = "stop" if ended or stopped else "length"
                outputs.append(Output(text=text, tokens=len(ids), finish_reason=finish))
            completions.append(Completion(outputs=tuple(outputs), prompt_tokens=int(mask.sum())))
        return completions

    @torch.inference_mode()
    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """log P(option comes next) per request, options read in context (backends/options.py), at fp32."""
        plans = [spellings(self.tokenizer, self._text(r), options) for r in requests]
        wanted: dict[tuple, set[int]] = {}
        for plan in plans:
            for context, tokens in reads(plan).items():
                wanted.setdefault(context, set()).update(tokens)
        contexts = sorted(wanted, key=len)  # similar lengths together: less padding
        table: dict[tuple, float] = {}
        for start in range(0, len(contexts), self.batch_size):
            chunk = contexts[start : start + self.batch_size]
            for context, row in zip(chunk, next_logprobs(self.model, chunk, [sorted(wanted[c]) for c in chunk],
                                                           self.tokenizer.pad_token_id)):
                table.update({(context, t): v for t, v in row.items()})
        return [option_logprobs(plan, options, lambda c, t: table[(c, t)]) for plan in plans]

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None


@torch.inference_mode()
def next_logprobs(model, contexts: list[tuple[int, ...]], wanted: list[list[int]], pad_id: int) -> list[dict[int, float]]:
    """log P(token | context) for the wanted tokens after each context, the wanted logits computed in fp32.

    A bf16 model's lm_head rounds logits to bf16 (steps of 1/8 at magnitude 16-32), which would quantise the
    judge's log-odds; so the head's input is caught and the wanted rows are recomputed in fp32 (a few rows: no
    cost). The log-partition comes from the model's own logits with those entries replaced. If the recomputed
    values do not match the model's (a head that scales or caps logits in a way not reproduced here), the
    model's own logits are used.
    """
    device = next(model.parameters()).device
    width = max(len(c) for c in contexts)
    ids = torch.tensor([[pad_id] * (width - len(c)) + list(c) for c in contexts], device=device)  # left padding
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    head, caught = model.get_output_embeddings(), {}
    hook = head.register_forward_hook(lambda module, args, out: caught.__setitem__("h", args[0]))
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1, :].float()
    finally:
        hook.remove()
    hidden = caught["h"][:, -1, :].float()  # (batch, hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    rows = []
    for b, tokens in enumerate(wanted):
        index = torch.tensor(tokens, device=device)
        exact = hidden[b] @ head.weight[index].float().T  # (len(tokens),)
        if getattr(head, "bias", None) is not None:
            exact = exact + head.bias[index].float()
        if cap:
            exact = torch.tanh(exact / cap) * cap
        row = logits[b].clone()
        if torch.allclose(exact, row[index], rtol=2**-6, atol=2**-6 * (1 + float(row[index].abs().max()))):
            row[index] = exact
        row = row - torch.logsumexp(row, dim=-1)
        rows.append({t: float(row[t]) for t in tokens})
    return rows
