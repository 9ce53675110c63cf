"""The FastAPI application: routers, error handlers, and a lifespan that loads the index.

Importing this module is cheap: the model and the index are loaded by the lifespan, in a worker
thread, so `/healthz` answers at once and `/readyz` turns 200 when a query can be answered. The
same thread then swaps in each new build `rag ingest` writes (`api.loader`).
Run with ``rag serve`` (or ``uvicorn --factory api.main:create_app``).
"""

from __future__ import annotations

import codecs
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, loader, metrics
from api.buckets import token_buckets
from api.deps import AppState
from api.limits import (
    EXPENSIVE,
    UNLIMITED,
    ConcurrencyLimit,
    Deadline,
    RateLimit,
    Slots,
    applied_rate,
)
from api.routes import ask, cite, documents, health, openai_compat, page, passages, search
from api.security import Access, KeyRing, is_protected
from api.telemetry import RequestTelemetry, configure_logging
from rag.backends import load_registry
from rag.search.retrieval import Retriever
from rag.settings import Settings, get_settings

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 2 * 1024 * 1024
ROUTERS = (
    health.router,
    search.router,
    passages.router,
    cite.router,
    documents.router,
    page.router,
    ask.router,
    openai_compat.router,
    metrics.router,
)


class BodyLimit:
    """Refuse request bodies over a size with 413: before reading when Content-Length says so, and
    while reading otherwise (a chunked upload has no length), so no body is read whole past the limit.
    A body that stalls for `timeout` seconds between pieces gets a 408, so a slow client cannot
    hold a request open (uvicorn has no body timeout of its own).

    A body that is not UTF-8 gets a 400 as it arrives. The JSON parser alone would take UTF-16 and
    UTF-32 too (it guesses the encoding from a byte-order mark or the NUL bytes of the first
    characters), so those are refused here: by an invalid UTF-8 byte (a UTF-16 or UTF-32 byte-order
    mark is one) or a NUL byte, which UTF-8 JSON never holds (a NUL in a string is written `\u0000`).

    Starlette's own limiter answers in plain text; this one keeps the API's JSON error shape: the
    HTTPException raised mid-read reaches the handler in `api.errors` like any other.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, timeout: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            message = f"request body is {int(length)} bytes; the limit is {self.max_bytes}"
            await errors.error_response(413, "too_large", message)(scope, receive, send)
            return
        seen = 0
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:  # after the body, receive() waits for the disconnect: no deadline
                return await receive()
            with anyio.move_on_after(self.timeout):
                message = await receive()
                if message["type"] == "http.request":
                    complete = not message.get("more_body", False)
                return message
            stalled = f"the request body stalled for over {self.timeout:g}s (RAG_BODY_TIMEOUT)"
            raise HTTPException(408, stalled)

        utf8 = codecs.getincrementaldecoder("utf-8")()

        async def limited() -> Message:
            nonlocal seen
            message = await timed()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if len(body) + seen > self.max_bytes:
                    raise HTTPException(413, f"request body is over the limit of {self.max_bytes} bytes")
                _check_utf8(utf8, body, seen, final=not message.get("more_body", False))
                seen += len(body)
            return message

        await self.app(scope, limited, send)


def _check_utf8(decoder: codecs.IncrementalDecoder, piece: bytes, offset: int, final: bool) -> None:
    """400 unless `piece`, the body's next bytes from `offset` on, continues valid UTF-8 with no NUL."""
    nul = piece.find(b"\x00")
    try:
        decoder.decode(piece, final=final)
    except UnicodeDecodeError as exc:
        at = offset + max(0, exc.start)
        raise HTTPException(
            400, f"the body is not UTF-8 (byte {at} is invalid); send UTF-8 encoded JSON"
        ) from exc
    if nul >= 0:
        raise HTTPException(
            400,
            f"the body holds a NUL byte (byte {offset + nul}): send UTF-8 encoded JSON, not UTF-16 or UTF-32",
        )


class IndexVersionHeader:
    """Name the index that answered in every response's `X-Index-Version` header: the one the
    request's dependencies read (`api.deps.get_serving`), else the one served when it ends."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_state = scope.setdefault("state", {})  # what `request.state` writes to

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                serving = self.state.serving
                version = request_state.get("index_version") or (serving.version if serving else None)
                if version:
                    MutableHeaders(scope=message).append("X-Index-Version", version)
            await send(message)

        await self.app(scope, receive, send_with_version)


def create_app(
    settings: Settings | None = None, retriever: Retriever | None = None, shared_dir: Path | None = None
) -> FastAPI:
    """Build the app. Pass `retriever` to serve an already loaded index (tests do), and `shared_dir`
    when the app is one of a server's worker processes (api/workers.py): what they share lives there."""
    state = AppState(settings=settings or get_settings())
    state.registry = load_registry(state.settings.backends_allow)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        if retriever is not None:
            state.embedder = retriever.embedder
            state.serving = loader.serving(retriever)
        threading.Thread(target=loader.run, args=(state,), name="index-loader", daemon=True).start()
        if metrics.multiprocess():  # the other workers' scrapes read this one's state from its files
            sync = app.state.metrics.keep_synced
            threading.Thread(target=sync, args=(state.stop,), name="metrics-sync", daemon=True).start()
        yield
        state.shut_down()

    # FastAPIOffline serves /docs (Swagger UI) from files in its package: FastAPI's own page loads
    # them from a CDN, which a machine without internet cannot reach. ReDoc is off: its bundle
    # still fetches a logo from the web.
    app = FastAPIOffline(
        title="Probation blog archive",
        summary="Search and cited answers over a blog about the probation service in England and Wales.",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.rag = state
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    _guard(app, state, shared_dir)
    _document_backends(app, state.registry.choices())
    return app


def _document_backends(app: FastAPI, choices: list[str]) -> None:
    """`backend` in /openapi.json as the names and aliases the registry knows now, so the schema
    allows no backend the server would refuse. (The registry still decides each request: one
    registered later is served, an unknown name gets 400 naming the known ones.)"""

    def edit(schema: dict[str, Any]) -> None:
        field = schema["components"]["schemas"]["AskRequest"]["properties"]["backend"]
        field["anyOf"] = [{"type": "string", "enum": choices}, {"type": "null"}]

    errors.edit_openapi(app, edit)


def _guard(app: FastAPI, state: AppState, shared_dir: Path | None) -> None:
    """The middleware, innermost first (each `add_middleware` wraps the ones before it): refusals
    come before any work, and the telemetry outside them all sees and logs every refusal."""
    s = state.settings
    keys = app.state.keys = KeyRing.from_settings(s)
    slots = Slots(s.max_concurrent_asks, s.queue_timeout)
    app.state.metrics = metrics.Metrics(state, slots)
    app.add_middleware(BodyLimit, timeout=s.body_timeout)
    app.add_middleware(ConcurrencyLimit, slots=slots)
    app.add_middleware(Deadline, seconds=s.request_timeout)
    rate = applied_rate(s, keyed=bool(keys))
    buckets = token_buckets(rate, 2 * rate, shared_dir) if rate > 0 else None
    app.add_middleware(RateLimit, buckets=buckets)
    app.add_middleware(Access, keys=keys)
    if s.cors_origins:  # closed unless configured: no CORS headers, so browsers keep other origins out
        origins = [o.strip() for o in s.cors_origins.split(",") if o.strip()]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "X-Index-Version"],
        )
    app.add_middleware(RequestTelemetry, metrics=app.state.metrics, routes=app.router.routes)
    app.add_middleware(IndexVersionHeader, state=state)  # outermost: refusals name the index too
    errors.document_middleware_errors(app, _middleware_statuses)


def _middleware_statuses(method: str, path: str, has_body: bool) -> list[int]:
    """What the middleware above may answer on an operation, by the same rules it applies."""
    if path in UNLIMITED:
        return []
    statuses = [429, 504]
    if is_protected(path):
        statuses.append(401)
    if (method, path) in EXPENSIVE:
        statuses.append(503)
    if has_body:
        statuses.append(408)
    return statuses
