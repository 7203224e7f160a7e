"""OpenAI-compatible backend: any server with /v1/completions and /v1/chat/completions (vllm serve, SGLang, TGI, hosted APIs).

Retries: the openai client retries 429/5xx/timeouts itself, but with a fixed 0.5 s base delay and never on a
malformed reply. So the client runs with max_retries=0 and one loop here covers every fault (429, 408/409,
5xx, timeouts, dropped connections, bad JSON, missing fields) with exponential backoff, jitter, Retry-After,
and one budget of `max_retries` per request. Other 4xx (bad request, bad key, unknown model) fail at once.

Concurrency: a thread pool of `max_concurrency` around the sync client. `generate` is a sync API, and an event
loop inside it would clash with callers that already run one (notebooks); the client's connection pool is
thread-safe, and a few dozen threads cost nothing next to a network round trip. The caller's thread collects
the results, so `progress` is never called from two threads at once.

Several base URLs make a pool (backends/endpoints.py): each request goes to the least-loaded endpoint, one that
fails is sat out for a cool-down, and a failed request is retried on another at once. `max_concurrency` is per
endpoint. The first URL names the model in record keys, so adding replicas keeps a run resumable.

The API key lives only inside the clients; every error message and log line is scrubbed of it (rlaif.redact) in
case a server echoes it.

A request's `prefix` (the reply starts with it): on /completions it is appended to the prompt. On
/chat/completions it becomes a final assistant message with vLLM's `continue_final_message: true,
add_generation_prompt: false` (extra body fields; vLLM and SGLang accept them). A server that refuses those
fields is asked again without the prefix, and from then on every chat request goes without it: the reply's
first token is then what is read, and the caller's option-mass check tells when that is not an option.

Log-probabilities come from the server's top-20 at the first position: the tokens whose text, stripped of
spaces, is the option are summed; a longer option ("10" where the tokenizer splits digits) is chained through
a token that begins it, with one more request whose prefix ends in that token. An option absent from the
top-20 gets the smallest returned log-probability, an upper bound on its true value, never -inf: so a label is
never exactly 0 or 1 because of the truncation.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace

import openai

from ..errors import UserError
from ..redact import redact, register
from .base import Completion, LogprobsUnavailable, Output, ProgressFn, Request
from .endpoints import Cancelled, Endpoint, EndpointPool
from .options import NEG_INF, log_minus, logsumexp

log = logging.getLogger("rlaif")

RETRY_STATUS = (408, 409, 429)  # and every 5xx: what the openai client itself would retry
MAX_DELAY = 30.0  # longest single wait between attempts, Retry-After included
TOP_LOGPROBS = 20  # vLLM's default --max-logprobs


class ServerError(UserError):
    """A request failed for good (retries ran out, or a bad key or unknown model); the CLI prints it as one line."""


class Unreachable(ConnectionError):
    """No answer at all (refused, timed out), as opposed to a server that answers wrongly."""


class _Malformed(Exception):
    """A reply that is not what the API promises; retried like a 5xx."""


class _Cancelled(Exception):
    """Another request of the batch failed for good; stop retrying this one."""


class _TooLong(Exception):
    """The server refused the prompt as longer than the model's context."""


class _NoContinue(Exception):
    """The server refused continue_final_message / add_generation_prompt (not a vLLM-style server)."""


class OpenAIGenerator:
    """Requests to an OpenAI-compatible server (or a pool of them), at most `max_concurrency` in flight per server,
    each request retried on its own."""

    has_chat_template = True  # chat requests go to /chat/completions, where the server applies its own template
    logit_dtype = None  # whatever the server computes in: unknown here

    def __init__(self, model: str, base_url: str | list[str] | tuple[str, ...], api_key: str | None = None,
                 max_concurrency: int = 8, timeout: float = 60.0, max_retries: int = 5, backoff: float = 0.5,
                 cooldown: float = 10.0):
        urls = [u.rstrip("/") for u in ([base_url] if isinstance(base_url, str) else base_url)]
        self.model, self.base_url = model, urls[0]
        self.model_id = f"{model} @ {self.base_url}"  # the first URL only: replicas added later keep the record keys
        self.max_concurrency, self.max_retries, self.backoff, self.timeout = max_concurrency, max_retries, backoff, timeout
        self.pool = EndpointPool([Endpoint(u, _client(u, api_key, timeout)) for u in urls], max_concurrency, cooldown)
        self.continues = True  # the server continues a final assistant message (vLLM's continue_final_message)

    def __repr__(self) -> str:
        return f"OpenAIGenerator({self.model_id!r})"

    def generate(self, requests: list[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """Complete every request, `max_concurrency` at a time; results in request order."""

        def one(request: Request, stop: threading.Event) -> Completion:
            s = request.sampling
            body = {"n": s.n, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
            if s.stop:
                body["stop"] = list(s.stop)
            if s.min_p:  # not an OpenAI API field: vLLM's and llama.cpp's servers take it; sent only when asked for
                body["extra_body"] = {"min_p": s.min_p}  # the client takes only OpenAI's own fields as arguments
            if s.seed is not None:
                body["seed"] = s.seed
            try:
                return self._call(request, body, lambda reply: _completion(reply, s.n, request.messages is not None), stop)
            except _TooLong:  # as the vllm backend does: one long prompt must not sink the batch
                return Completion(outputs=(Output(text="", tokens=0, finish_reason="prompt_too_long"),) * s.n, prompt_tokens=0)

        def report(result: Completion) -> None:
            if progress:
                progress(1, sum(o.tokens for o in result.outputs))

        return self._map(one, requests, report)

    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """log P(option comes next) per request from the server's top-20 (module docstring: spellings summed, "10"
        chained, absent options bounded); a prompt the server refuses as too long gets -inf for every option."""

        def top(request: Request, stop: threading.Event) -> list[tuple[str, float]]:
            body = {"max_tokens": 1, "temperature": 0.0}
            body.update({"logprobs": True, "top_logprobs": TOP_LOGPROBS} if request.messages else {"logprobs": TOP_LOGPROBS})
            return self._call(request, body, lambda reply: _top_logprobs(reply, request.messages is not None), stop)

        def one(request: Request, stop: threading.Event) -> dict[str, float]:
            try:
                first = top(request, stop)
            except _TooLong:  # as the vllm backend does: one long prompt must not sink the batch
                return {o: NEG_INF for o in options}

            def after(token: str) -> list[tuple[str, float]] | None:
                if request.messages is not None and not self.continues:
                    return None  # the reply cannot be continued mid-way on this server
                try:
                    return top(replace(request, prefix=request.prefix + token), stop)
                except _TooLong:
                    return None

            return _option_logprobs(first, options, after)

        return self._map(one, requests, lambda result: None)

    def close(self) -> None:
        """Close the clients' connections."""
        self.pool.close()

    def _map(self, fn, items: list, report) -> list:
        # one pool per call: nothing lingers between calls, and a failure cancels only this call's requests
        results: list = [None] * len(items)
        stop, failures = threading.Event(), []

        def guarded(item):
            try:
                return fn(item, stop)
            except _Cancelled:
                raise
            except BaseException as e:  # stop here, not in the caller: a free worker would already send the next request
                failures.append(e)
                stop.set()
                raise

        slots = self.max_concurrency * len(self.pool.endpoints)
        pool = ThreadPoolExecutor(max_workers=max(1, min(slots, len(items))))
        try:
            pending = {pool.submit(guarded, item): i for i, item in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.exception():  # the first real failure, not the _Cancelled it caused elsewhere
                        raise failures[0]
                    results[pending.pop(future)] = result = future.result()
                    report(result)
        finally:
            stop.set()  # on error or Ctrl-C: running requests give up at their next retry
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _call(self, request: Request, body: dict, parse, stop: threading.Event):
        """Send one request (its prefix as the server allows), retrying transient faults; `parse` turns the reply
        into a result or raises _Malformed."""
        try:
            return self._send(request, body, parse, stop, self.continues)
        except _NoContinue:
            if self.continues:
                self.continues = False
                log.warning(f"warning: {self.base_url} does not continue a started assistant reply "
                            "(continue_final_message); chat requests go without their reply prefix")
            return self._send(request, body, parse, stop, False)

    def _send(self, request: Request, body: dict, parse, stop: threading.Event, continues: bool):
        chat = request.messages is not None
        path = "chat/completions" if chat else "completions"
        if not chat:
            body = {"model": self.model, **body, "prompt": request.prompt + request.prefix}
        elif request.prefix and continues:
            body = {"model": self.model, **body, "extra_body": {**body.get("extra_body", {}), "continue_final_message": True,
                                                                      "add_generation_prompt": False},
                    "messages": [*request.messages, {"role": "assistant", "content": request.prefix}]}
        else:
            body = {"model": self.model, **body, "messages": list(request.messages)}
        for attempt in range(self.max_retries + 1):
            try:
                lease = self.pool.acquire(stop)
            except Cancelled:
                raise _Cancelled from None
            endpoint = lease.endpoint
            where, fault, delay = f"{endpoint.url}/{path}", None, None
            try:
                reply = (endpoint.client.chat.completions if chat else endpoint.client.completions).create(**body)
                try:
                    return parse(reply)
                except (AttributeError, TypeError, IndexError, KeyError) as e:  # whatever the parser trips on
                    raise _Malformed(f"{type(e).__name__}: {e}") from None
            except openai.APIStatusError as e:
                message = _server_message(e)
                if e.status_code not in RETRY_STATUS and e.status_code < 500:
                    if e.status_code == 400 and ("maximum context length" in message or "context_length_exceeded" in message):
                        raise _TooLong from None
                    if e.status_code in (400, 422) and "extra_body" in body and (
                            "continue_final_message" in message or "add_generation_prompt" in message):
                        raise _NoContinue from None
                    raise self._error(f"{where} refused the request: HTTP {e.status_code}: {message}") from None
                fault = "busy" if e.status_code == 429 else "error"
                error, delay = f"HTTP {e.status_code}: {message}", _retry_after(e.response.headers)
            except openai.APITimeoutError:
                fault, error = "error", f"no reply within {self.timeout:g} s"
            except openai.APIConnectionError as e:
                fault, error = "down", f"connection failed ({_reason(e)})"
            except (ValueError, openai.APIResponseValidationError, _Malformed) as e:  # JSONDecodeError is a ValueError
                fault, error = "error", f"malformed reply ({e})"
            finally:  # a refusal or a missing capability still means the server answered: fault stays None
                self.pool.release(lease, fault, error if fault else "")
            if attempt < self.max_retries:
                if self.pool.reroute(endpoint):  # it is out and another is in: go there now
                    continue
                # jitter, so the workers one 429 turned away do not all come back at the same instant
                delay = delay if delay is not None else self.backoff * 2**attempt * random.uniform(0.5, 1.0)
                if stop.wait(min(delay, MAX_DELAY)):
                    raise _Cancelled
        if len(self.pool.endpoints) == 1:
            raise self._error(f"{where} failed {self.max_retries + 1} times; last: {error}. "
                              "Is the server up and not overloaded? Lower max_concurrency or raise max_retries")
        raise self._error(f"a request failed {self.max_retries + 1} times on a pool of {len(self.pool.endpoints)} endpoints; "
                          f"last: {where}: {error}. Are the servers up and not overloaded? "
                          "Lower max_concurrency or raise max_retries")

    def _error(self, message: str) -> ServerError:
        return ServerError(redact(message))  # the key is registered in _client


def _client(base_url: str, api_key: str | None, timeout: float) -> openai.OpenAI:
    # without a key the client would fall back to $OPENAI_API_KEY and send it to this server; vLLM's placeholder instead
    register(api_key)
    return openai.OpenAI(api_key=api_key or "EMPTY", base_url=base_url, timeout=timeout, max_retries=0)


def _completion(reply, n: int, chat: bool) -> Completion:
    """Outputs of one /completions or /chat/completions reply; usage's token total is split across the n choices."""
    choices = sorted(reply.choices or [], key=lambda c: c.index or 0)
    if len(choices) != n:
        raise _Malformed(f"expected {n} choices, got {len(choices)}")
    texts = [c.message.content if chat and c.message else getattr(c, "text", None) for c in choices]
    if any(not isinstance(t, str) for t in texts):
        raise _Malformed("a choice has no text")
    usage = reply.usage  # optional: servers that omit it still work, their token counts are 0
    total = (usage.completion_tokens or 0) if usage else 0
    # the API reports one total for all n choices: share it out by text length, so the counts still sum to it
    weights = [len(t) + 1 for t in texts]
    bounds = [round(total * sum(weights[:i]) / sum(weights)) for i in range(n + 1)]
    outputs = tuple(
        Output(text=t, tokens=hi - lo, finish_reason="length" if c.finish_reason == "length" else "stop")
        for t, c, lo, hi in zip(texts, choices, bounds, bounds[1:])
    )
    return Completion(outputs=outputs, prompt_tokens=(usage.prompt_tokens or 0) if usage else 0)


def _top_logprobs(reply, chat: bool) -> list[tuple[str, float]]:
    """The top tokens and their log-probabilities at the first generated position."""
    if not reply.choices:
        raise _Malformed("no choices")
    lp = reply.choices[0].logprobs
    if chat:
        pairs = [(t.token, t.logprob) for t in lp.content[0].top_logprobs] if lp and lp.content else []
    else:
        pairs = list(lp.top_logprobs[0].items()) if lp and lp.top_logprobs and lp.top_logprobs[0] else []
    if not pairs:
        raise LogprobsUnavailable("the server returned no log-probabilities")
    return pairs


def _spelled(token: str) -> str:
    """A token's text without the leading space a tokenizer may show as " ", "▁" or "Ġ"."""
    return token.replace("▁", " ").replace("Ġ", " ").strip()


def _option_logprobs(first: list[tuple[str, float]], options: list[str], after) -> dict[str, float]:
    """log P(option) from the top tokens at the first position; `after(token)` is the top list once that token is
    written (None if it cannot be asked). Spellings summed, longer options chained, absent ones bounded."""
    pairs = [(t, float(lp)) for t, lp in first if t is not None and lp is not None]
    floor = min((lp for _, lp in pairs), default=NEG_INF)  # what is not in the top-20 has at most this
    own: dict[str, list[float]] = {o: [] for o in options}
    for token, lp in pairs:
        text = _spelled(token)
        longer = [o for o in options if len(o) > len(text) > 0 and o.startswith(text)]
        rest_lp = {}  # option -> log P(rest | token)
        if longer:
            follow = after(token)
            if follow is not None:
                follow = [(t, float(v)) for t, v in follow if t is not None and v is not None]
                bound = min((v for _, v in follow), default=NEG_INF)
                for o in longer:
                    rest = o[len(text):]
                    matched = [v for t, v in follow if t == rest]
                    rest_lp[o] = logsumexp(matched) if matched else bound
                    own[o].append(lp + rest_lp[o])
        if text in own:  # this token spells the option; the mass that goes on into a longer option is not its
            own[text].append(log_minus(lp, logsumexp(lp + v for v in rest_lp.values())))
    return {o: logsumexp(v) if v else floor for o, v in own.items()}


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body.get("message", e.body) if isinstance(e.body, dict) else e.body
    return redact(" ".join(str(body or e.response.reason_phrase).split()))[:300]  # redact first: a cut key is no longer found


def _retry_after(headers) -> float | None:
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            return max(0.0, float(headers.get(name)) / scale)
        except (TypeError, ValueError):  # absent, or an HTTP date: fall back to our own backoff
            continue
    return None


def _reason(e: Exception) -> str:
    cause = e.__cause__ or e.__context__
    text = str(cause) if cause else str(e)
    return (text.split("] ", 1)[-1] if text.startswith("[Errno") else text).lower() or type(cause or e).__name__


def check_server(base_url: str, api_key: str | None, timeout: float = 5.0) -> list[str]:
    """The ids of the models a server serves (GET /models, once); ConnectionError with one plain sentence if it fails
    (Unreachable when nothing answered)."""
    base_url = base_url.rstrip("/")
    client = _client(base_url, api_key, timeout)
    try:
        models = client.models.list().data
        if not isinstance(models, list):
            raise ConnectionError(f"{base_url}/models did not answer like an OpenAI-compatible server")
        return [m.id for m in models]
    except openai.APITimeoutError:
        raise Unreachable(f"cannot reach {base_url}: no answer within {timeout:g} s") from None
    except openai.APIConnectionError as e:
        raise Unreachable(f"cannot reach {base_url}: {_reason(e)}") from None
    except openai.APIStatusError as e:
        hints = {401: " (check the API key)", 403: " (check the API key)", 404: " (does base_url end in /v1?)"}
        hint = hints.get(e.status_code, "")
        raise ConnectionError(f"{base_url}/models answered HTTP {e.status_code}{hint}") from None
    except (ValueError, AttributeError, openai.APIResponseValidationError):
        raise ConnectionError(f"{base_url}/models did not answer like an OpenAI-compatible server") from None
    finally:
        client.close()
