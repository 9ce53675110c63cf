"""How `rag serve` runs uvicorn: bounds on slow and excess clients, and a graceful shutdown.

uvicorn bounds none of these by default: a connection that sends half a request line and stalls
is held forever (its keep-alive timer only starts after a first response), as is one that stalls
mid-body, and there is no cap on connections. So:

- the request line and headers must arrive within ``RAG_HEADER_TIMEOUT`` seconds of the connection
  opening (or of a kept-alive connection's next request starting), else the connection is closed:
  a small subclass of uvicorn's h11 protocol arms a timer when a request starts and disarms it
  when h11 has parsed the whole head. Nothing has been handed to the app yet, so closing is safe,
  and h11 cannot send a response before it has read a request;
- a body that stalls for ``RAG_BODY_TIMEOUT`` seconds between pieces gets a 408 (`BodyLimit` in
  api/main.py, which bounds each read while the body is incomplete);
- at most ``RAG_MAX_CONNECTIONS`` connections and requests at once (uvicorn's
  ``limit_concurrency``: beyond it, new requests get a 503);
- idle kept-alive connections close after uvicorn's 5 s (``timeout_keep_alive``);
- ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from the proxies in
  ``RAG_TRUSTED_PROXIES`` (uvicorn's own default believes them from 127.0.0.1), so a client cannot
  name its own address to the rate limit or the logs.

On SIGTERM uvicorn stops listening (new connections are refused), closes idle connections and
lets in-flight requests finish for ``RAG_SHUTDOWN_GRACE`` seconds; answer streams get the same
grace to end with their ``done`` event (api/routes/ask.py). Answers still waiting on their LLM
shortly before the grace runs out have their backend call cut (`GracefulServer`), so they fall
back to the extractive answer and finish - plain ones with a 200, streams with ``done`` - before
uvicorn cancels whatever is left.

`rag serve --workers N` runs `serve` in each of its workers (api/workers.py), so all of this, the
shutdown included, holds in every worker.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from rag.settings import Settings

# Answers still waiting on an LLM are cut this long before the grace ends, and uvicorn waits this
# long past it, so a fallback answer always has time to get its last bytes out.
SHUTDOWN_MARGIN = 2.0


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is late (see module doc)."""

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self._head_timer is None and (before is None or before.response_complete):
            self._arm()  # the next request on a kept-alive connection starts: its head is timed too
        super().data_received(data)
        if self.cycle is not before:  # h11 parsed a whole request head
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request head took over %gs", self.head_timeout)
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass  # mid-request state: just close
            self.transport.close()


def head_timeout_protocol(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class with its head timeout set (uvicorn builds one instance per connection)."""
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout": seconds})


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn config `rag serve` runs `app` with, bounded as the module docstring says."""
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": head_timeout_protocol(settings.header_timeout),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": settings.shutdown_grace + SHUTDOWN_MARGIN,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise, so any process on
        # the machine could claim any address (and a fresh rate-limit bucket with each request).
        "proxy_headers": settings.trusted_proxies is not None,
        "forwarded_allow_ips": settings.trusted_proxies or "",
        **overrides,
    }
    return uvicorn.Config(app, **values)


class GracefulServer(uvicorn.Server):
    """uvicorn's server; on the first exit signal it also starts a timer that calls `on_grace_ending`
    `after` seconds later (from the timer's thread)."""

    def __init__(self, config: uvicorn.Config, on_grace_ending: Callable[[], None], after: float) -> None:
        super().__init__(config)
        self.on_grace_ending = on_grace_ending
        self.after = after

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:
            timer = threading.Timer(self.after, self.on_grace_ending)
            timer.daemon = True
            timer.start()


def serve(app: Any, settings: Settings, sockets: list[socket.socket] | None = None, **overrides: Any) -> None:
    """Run `app` the way `rag serve` does, until SIGTERM or SIGINT (see the module docstring): on
    `sockets` already listening when given (each worker of `rag serve --workers`, api/workers.py),
    else on the settings' host and port."""
    from api.answer_pool import cut_answers

    after = max(0.0, settings.shutdown_grace - SHUTDOWN_MARGIN)
    config = server_config(app, settings, **overrides)
    GracefulServer(config, partial(cut_answers, app.state.rag), after).run(sockets)
