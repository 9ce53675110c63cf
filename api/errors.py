"""One JSON error shape for every failure, and the single place that maps errors to HTTP status.

Shape: ``{"error": {"code": str, "message": str}}``. Library errors carry their own status
(`RagError.status`); validation errors become 422 with a message naming the field; anything
unexpected is logged and becomes a 500 in the same shape (a bug, never a contract).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.models import ErrorResponse
from rag.errors import RagError, RetryLater, UnauthorizedError, clipped, describe_validation

logger = logging.getLogger(__name__)

# What each error status means here. Routes document the ones they can send with `documented`, so
# /openapi.json names every error a client can get, each in the one shape the server sends.
MEANINGS = {
    400: "Bad request: an unknown backend, or a body that is not UTF-8.",
    401: "No valid API key (`Authorization: Bearer <key>`), when keys are configured.",
    404: "No passage or document with that id.",
    408: "The request body stalled.",
    413: "Request body over the 2 MB limit (chunked uploads included).",
    422: "Invalid input: the message names the field and says what is wrong.",
    429: "Over this client's rate limit; retry after `Retry-After` seconds.",
    503: "The index is still loading or is not available (retry when GET /readyz answers 200), "
    "or no slot is free for an ask or batch (retry after `Retry-After` seconds).",
    504: "The response did not start within RAG_REQUEST_TIMEOUT.",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each status with the error model and its meaning."""
    return {status: {"model": ErrorResponse, "description": MEANINGS[status]} for status in statuses}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def rag_error_response(exc: RagError) -> JSONResponse:
    """The response for a library error, with the headers its status calls for; middleware that
    refuses a request before routing (and so outside the handlers below) answers with this too."""
    headers = {}
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(exc.retry_after)
    return error_response(exc.status, exc.code, exc.message, headers)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # loc is ("body", character offset), not a field
            offset = err.get("loc", ("body", "?"))[-1]
            reason = err.get("ctx", {}).get("error", "malformed")
            parts.append(f"body is not valid JSON: {reason} at character {offset}")
        else:
            parts.append(describe_validation([err]))
    return "; ".join(parts)


async def _rag_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagError)  # registered for RagError only
    if exc.status >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.message)
    return rag_error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _describe(exc))


# Starlette's and FastAPI's own wording, made to say what is wrong.
_DETAILS = {
    "There was an error parsing the body": "the body could not be read as JSON; send UTF-8 encoded JSON",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        408: "timeout",
        413: "too_large",
    }
    code = codes.get(exc.status_code, "http_error")
    detail = _DETAILS.get(str(exc.detail), str(exc.detail))
    method, path = clipped(request.method), clipped(request.url.path)
    if exc.status_code == 404 and detail == "Not Found":  # no route matched, not an unknown id
        detail = f"no such endpoint: {method} {path} (see /docs)"
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{method} is not allowed on {path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, code, detail, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route answers on this path. RFC 9110 wants them in a 405's `Allow`; Starlette
    names only those of the first route on the path, so a path with a GET route and a separate HEAD
    one (kept out of the schema) would claim to allow HEAD alone. Each method is asked of the router
    as a request would be, so included routers and mounts count too."""
    routes = request.app.router.routes
    return ", ".join(
        m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; the server log has details")


def edit_openapi(app: FastAPI, edit: Callable[[dict[str, Any]], None]) -> None:
    """Make `edit` part of how the app's OpenAPI document is generated (once, then cached by
    FastAPI), after the edits added before it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        edit(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _without_default_validation_error(app: FastAPI) -> None:
    """FastAPI documents a 422 in its own `detail` shape on every route with a parameter; the server
    never sends that shape (`_validation_error` answers in ours), so the schema drops it. Routes that
    can send a 422 document it with `documented(422)`, and FastAPI then adds none of its own."""

    def edit(schema: dict[str, Any]) -> None:
        default = "#/components/schemas/HTTPValidationError"
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                body = responses.get("422", {}).get("content", {}).get("application/json", {})
                if body.get("schema", {}).get("$ref") == default:
                    del responses["422"]
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)

    edit_openapi(app, edit)


def document_middleware_errors(app: FastAPI, statuses: Callable[[str, str, bool], Iterable[int]]) -> None:
    """Add the statuses middleware sends before any route runs (keys, rate, slots, deadline, stalled
    bodies) to each operation they can reach: `statuses(method, path, has_body)` names them."""

    def edit(schema: dict[str, Any]) -> None:
        body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for status in statuses(method.upper(), path, "requestBody" in operation):
                    responses.setdefault(str(status), {"description": MEANINGS[status], **body})

    edit_openapi(app, edit)


def install(app: FastAPI) -> None:
    """Register the handlers (MRO lookup makes the RagError one cover every subclass), and make the
    OpenAPI document describe the errors as they are sent."""
    app.add_exception_handler(RagError, _rag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    _without_default_validation_error(app)
