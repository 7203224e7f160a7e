"""A pool of OpenAI-compatible endpoints serving the same model: least-loaded routing, and failing endpoints sat out.

Each request goes to the endpoint with the fewest requests in flight (ties: the one picked longest ago), at most
`max_concurrency` per endpoint. An endpoint that refuses connections, or fails FAILURES_TO_TAKE_OUT times in a row
(5xx, timeouts, malformed replies), is taken out for a cool-down that doubles with each outage in a row; after it,
one request probes it: success brings it back, failure sends it out again. The last endpoint still in is never taken
out: with nowhere else to go its requests are retried with backoff, exactly as with a single server, and fail with
a clear error when their retries run out. A 429 is the server asking for patience, not a fault: it takes nothing out.

Small on purpose: LiteLLM's Router does this and much more, but would pull a large dependency into every install.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .. import redact  # noqa: F401  (its filter scrubs keys from the warnings below: `reason` is server text)

log = logging.getLogger("rlaif")

FAILURES_TO_TAKE_OUT = 3  # 5xx / timeouts / malformed replies in a row; a refused connection takes it out at once
MAX_COOLDOWN = 300.0  # longest cool-down, however often an endpoint failed in a row
WAIT_SLICE = 0.1  # a blocked acquire rechecks the stop flag and expired cool-downs this often


class Cancelled(Exception):
    """The batch was stopped while a request waited for a free endpoint."""


@dataclass(eq=False)
class Endpoint:
    """One server of the pool and what the pool knows about it."""

    url: str
    client: object  # an openai.OpenAI bound to `url`
    in_flight: int = 0
    failures: int = 0  # faults in a row since the last success
    outages: int = 0  # times taken out in a row since the last success
    out_until: float | None = None  # monotonic time its cool-down ends; None while it is in
    probing: bool = False  # a request is testing it after its cool-down
    picked: int = 0  # sequence number of the last time it was picked (tie-break: least recently used)
    outages_total: int = 0  # times taken out ever: tells a request whether its endpoint went out while it ran


@dataclass(frozen=True)
class Lease:
    """One request's hold on an endpoint, from acquire to release."""

    endpoint: Endpoint
    outages_total: int  # the endpoint's count when the request was sent
    probe: bool  # the request tests the endpoint after its cool-down


class EndpointPool:
    """Hands out endpoints to request threads and tracks their health."""

    def __init__(self, endpoints: list[Endpoint], max_concurrency: int, cooldown: float):
        self.endpoints, self.max_concurrency, self.cooldown = endpoints, max_concurrency, cooldown
        self.cond = threading.Condition()
        self.picks = 0

    def acquire(self, stop: threading.Event) -> Lease:
        """The least-loaded usable endpoint with a free slot; waits while every one is full."""
        with self.cond:
            while True:
                if stop.is_set():
                    raise Cancelled
                endpoint = self._pick(time.monotonic())
                if endpoint is not None:
                    self.picks += 1
                    endpoint.in_flight += 1
                    endpoint.picked = self.picks
                    endpoint.probing = endpoint.out_until is not None  # its cool-down is over: this request tests it
                    return Lease(endpoint, endpoint.outages_total, endpoint.probing)
                self.cond.wait(WAIT_SLICE)

    def _pick(self, now: float) -> Endpoint | None:
        usable = [e for e in self.endpoints if e.in_flight < self.max_concurrency
                  and (e.out_until is None or (e.out_until <= now and not e.probing))]
        return min(usable, key=lambda e: (e.in_flight, e.picked), default=None)

    def release(self, lease: Lease, fault: str | None, reason: str = "") -> bool:
        """Record how the request holding `lease` went; True if that took its endpoint out.

        fault: None (success), "down" (the connection failed), "error" (5xx, timeout, malformed), "busy" (429).
        """
        e = lease.endpoint
        with self.cond:
            e.in_flight -= 1
            if lease.probe:
                e.probing = False
            self.cond.notify_all()
            if lease.outages_total != e.outages_total:
                return False  # it went out after this request was sent: the outcome says nothing new
            if fault is None:
                if lease.probe:
                    log.warning(f"endpoint {e.url} is back")
                e.failures, e.outages, e.out_until = 0, 0, None
                return False
            if fault == "busy":
                return False
            e.failures += 1
            if not (lease.probe or fault == "down" or e.failures >= FAILURES_TO_TAKE_OUT):
                return False
            if not lease.probe and not any(x.out_until is None for x in self.endpoints if x is not e):
                return False  # the last one in stays in: its requests back off and retry, as with one server
            e.outages += 1
            e.outages_total += 1
            seconds = min(self.cooldown * 2 ** (e.outages - 1), MAX_COOLDOWN)
            e.out_until = time.monotonic() + seconds
            log.warning(f"endpoint {e.url} is out for {seconds:g} s ({reason}); "
                        f"{sum(x.out_until is None for x in self.endpoints)} of {len(self.endpoints)} in")
            return True

    def reroute(self, failed: Endpoint) -> bool:
        """Whether `failed` is out and another endpoint is in: then a retry can go there without waiting."""
        with self.cond:
            return failed.out_until is not None and any(e.out_until is None for e in self.endpoints if e is not failed)

    def close(self) -> None:
        """Close every endpoint's connections."""
        for e in self.endpoints:
            e.client.close()
