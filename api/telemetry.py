"""One structured log line and one metrics observation per request, and its request id.

The request id is the client's ``X-Request-ID`` when it sent a sane one (so a proxy's id carries
through), else a fresh one; either way it is returned as ``X-Request-ID``. The log line is JSON on
the ``rag.requests`` logger::

    {"ts": "...", "request_id": "...", "method": "POST", "route": "/v1/search", "path": "/v1/search",
     "status": 200, "duration_ms": 12.3, "key": "1a2b3c4d", "client": "127.0.0.1", "error": null,
     "pid": 4242}

``key`` is the caller's key id (an HMAC of the key under the server's secret, see `api.security`;
never the key), ``client`` the peer's address (the address a proxy forwarded only when the peer is
one of ``RAG_TRUSTED_PROXIES``), ``error`` the JSON error code of an error response, ``pid`` the
process that answered (one of ``--workers``). This is pure ASGI middleware, outermost, so it sees
every refusal (401, 429, 503, 504) as it went out and never buffers a streamed answer: the duration
runs to the stream's end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import Metrics
from api.security import KEY_ID

logger = logging.getLogger("rag.requests")
REQUEST_ID = "rag.request_id"  # scope entry
_SANE_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
_ERROR_BODY_LIMIT = 64 * 1024  # an error body is read for its code only up to this size
UNMATCHED = "unmatched"


def configure_logging() -> None:
    """Send request lines to stderr, one JSON object each, unless the host application already
    routed the logger somewhere (then its handlers and level stand)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _flat(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes themselves: FastAPI wraps each included router in a route of its own."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _flat(included.routes)
        else:
            yield route


def route_of(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route that serves `scope` (a wrong method still names its route).
    Worked out before routing, so a request refused before it reaches its route is named too."""
    partial = None
    for route in _flat(routes):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", UNMATCHED))
    return partial or UNMATCHED


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            sent: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(sent):
                return sent
    return uuid.uuid4().hex


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
        return str(error["code"]) if isinstance(error, dict) and "code" in error else None
    except (ValueError, AttributeError):
        return None


class RequestTelemetry:
    """Request id in and out, the log line and the metrics, for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's live list: routes added later are seen too
        self.pid = os.getpid()  # each worker builds its own app, after it started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = scope[REQUEST_ID] = _request_id(scope)
        route = route_of(self.routes, scope)
        status = 500  # what the client sees if the app fails before it answers
        error_body: bytearray | None = None

        async def observed(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if status >= 400:
                    error_body = bytearray()
            elif message["type"] == "http.response.body" and error_body is not None:
                if len(error_body) < _ERROR_BODY_LIMIT:
                    error_body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            seconds = time.perf_counter() - started
            code = _error_code(bytes(error_body)) if error_body is not None else None
            # A 500 with no error body is a failure the app never answered for. Other statuses
            # without a code are answers, not errors to count: /readyz's 503 while an index
            # loads is logged as such, not as an internal error on every probe.
            if status == 500 and code is None:
                code = "internal_error"
            self.metrics.observe(scope["method"], route, status, seconds, code)
            client = scope.get("client")
            line = {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "method": scope["method"],
                "route": route,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000.0, 2),
                "key": scope.get(KEY_ID),
                "client": client[0] if client else None,
                "error": code,
                "pid": self.pid,  # which worker answered, under `rag serve --workers`
            }
            logger.info(json.dumps(line))
