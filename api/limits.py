"""Fair use: a request rate per client, a bound on expensive work at once, a deadline per request.

Three pure ASGI middlewares (no response is buffered, streams pass through as they are sent):

- `RateLimit`: a token bucket per API key (per client address without one), `RAG_RATE_LIMIT`
  requests a second with a burst of twice that; over it, 429 with ``Retry-After``. Health probes
  are never limited: a load balancer must always be able to ask. Unset, the rate is
  `applied_rate`'s: on where callers can crowd each other out, off on a keyless loopback server.
  The client address is the peer's (a proxy's forwarded one only from ``RAG_TRUSTED_PROXIES``:
  api/serving.py); the buckets are this process's (`TokenBuckets`), or every worker's under
  ``rag serve --workers`` (api/buckets.py).
- `ConcurrencyLimit`: at most `RAG_MAX_CONCURRENT_ASKS` expensive requests (asks, chat completions,
  search and cite batches) run at once; the next ones wait up to `RAG_QUEUE_TIMEOUT` for a slot, then get
  503 with ``Retry-After``. On two cores, more answers at once only stretch every one of them.
- `Deadline`: a request whose response has not started within `RAG_REQUEST_TIMEOUT` gets a 504.
  Once a response has started (a stream), the deadline no longer applies: the stream's own LLM
  deadline ends it with its ``done`` event, which a 504 could no longer replace.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import rag_error_response
from api.security import KEY_ID, is_loopback
from rag.errors import DeadlineExceededError, OverloadedError, RateLimitedError
from rag.settings import Settings

UNLIMITED = frozenset({"/healthz", "/readyz"})
ADMITTED = "rag.admitted"  # scope entry: the time.monotonic() an expensive request got its slot
EXPENSIVE = frozenset(
    {
        ("POST", "/v1/ask"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/search/batch"),
        ("POST", "/v1/cite/batch"),
    }
)
DEFAULT_RATE = 10.0  # requests a second per caller, where callers share the server (README: Fair use)


def applied_rate(settings: Settings, keyed: bool) -> float:
    """The rate limit to apply: `RAG_RATE_LIMIT` whenever the operator set it; unset, DEFAULT_RATE
    when callers are told apart and may crowd each other out (API keys configured, or a bind that
    other machines reach), and none on a loopback server without keys (`make serve`). Everyone who
    reaches that one is on this machine and could run `rag` over the same index on the same cores,
    so a limit would protect no one and only fail a script's first loop; the bound on expensive
    requests and the deadline still apply."""
    if settings.rate_limit is not None:
        return settings.rate_limit
    return DEFAULT_RATE if keyed or not is_loopback(settings.host) else 0.0


def client_of(scope: Scope) -> str:
    """Who a request counts against: its key id, else its address."""
    found = scope.get(KEY_ID)
    if found:
        return f"key:{found}"
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:unknown"


class Buckets(Protocol):
    """Where the token buckets live: `TokenBuckets` in this process, or `api.buckets` for every
    worker of one server. The policy (who counts as a client, which paths are limited) is here."""

    rate: float

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is back."""
        ...


class TokenBuckets:
    """One token bucket per client: `rate` tokens a second up to `burst`; a request takes one.

    At most `max_clients` buckets are kept (least recently seen dropped first): a dropped bucket
    comes back full, which is what an idle client's bucket would be anyway.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is back."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class RateLimit:
    """429 with Retry-After for a client over its rate (a process's requests share one event loop,
    so `TokenBuckets` needs no lock; `api.buckets` shares them between processes)."""

    def __init__(self, app: ASGIApp, buckets: Buckets | None) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.buckets is not None and scope["path"] not in UNLIMITED:
            wait = self.buckets.take(client_of(scope))
            if wait > 0:
                rate = f"{self.buckets.rate:g}"
                message = f"over the rate limit of {rate} requests a second; retry in {math.ceil(wait)} s"
                await rag_error_response(RateLimitedError(message, wait))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Slots:
    """The bounded pool of expensive requests: `in_flight` run, `waiting` queue for a slot."""

    def __init__(self, size: int, queue_timeout: float) -> None:
        self.size = size
        self.queue_timeout = queue_timeout
        self.in_flight = 0
        self.waiting = 0
        self.typical = 1.0  # seconds an expensive request takes (moving average), for Retry-After
        self._semaphore: anyio.Semaphore | None = None  # made on the server's event loop

    async def acquire(self) -> bool:
        if self._semaphore is None:
            self._semaphore = anyio.Semaphore(self.size)
        self.waiting += 1
        try:
            with anyio.move_on_after(self.queue_timeout):
                await self._semaphore.acquire()
                self.in_flight += 1
                return True
            return False
        finally:
            self.waiting -= 1

    def release(self, took: float) -> None:
        assert self._semaphore is not None  # acquired before
        self.in_flight -= 1
        self._semaphore.release()
        self.typical = 0.8 * self.typical + 0.2 * took


class ConcurrencyLimit:
    """Run an expensive request only with a slot; 503 with Retry-After when none comes free."""

    def __init__(self, app: ASGIApp, slots: Slots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in EXPENSIVE:
            await self.app(scope, receive, send)
            return
        if not await self.slots.acquire():
            message = (
                f"the server is busy: all {self.slots.size} slots for answers and batches stayed taken "
                f"for {self.slots.queue_timeout:g} s; retry shortly"
            )
            error = OverloadedError(message, self.slots.typical)
            await rag_error_response(error)(scope, receive, send)
            return
        started = scope[ADMITTED] = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release(time.monotonic() - started)


class Deadline:
    """504 for a request whose response has not started within `seconds`.

    The app runs in a task of its own: a sync route's thread cannot be interrupted, so waiting for
    it to notice a cancellation would hold the client as long as the work. The client gets its 504
    at the deadline; the work finishes in the background (holding its concurrency slot until then,
    since it still uses the CPU) and what it sends is dropped.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED:
            await self.app(scope, receive, send)
            return
        progressed = anyio.Event()  # the response started, or the app returned
        timed_out = False
        failure: Exception | None = None

        async def guarded(message: Message) -> None:
            if timed_out:
                return
            if message["type"] == "http.response.start":
                progressed.set()
            await send(message)

        async def run() -> None:
            nonlocal failure
            try:
                await self.app(scope, receive, guarded)
            # Kept and re-raised after the task group: raised inside it, it would arrive wrapped
            # in an ExceptionGroup that the server's error handling does not unwrap.
            except Exception as exc:  # noqa: BLE001
                failure = exc
            finally:
                progressed.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            with anyio.move_on_after(self.seconds):
                await progressed.wait()
            if not progressed.is_set():
                timed_out = True
                message = f"the request ran past its deadline of {self.seconds:g} s (RAG_REQUEST_TIMEOUT)"
                await rag_error_response(DeadlineExceededError(message))(scope, receive, send)
                tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
