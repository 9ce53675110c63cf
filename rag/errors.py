"""Errors raised by the library.

The hierarchy is small on purpose; each class carries the HTTP status the API maps it to, so the
mapping lives with the error and `api/errors.py` needs a single handler::

    RagError (500)
    ├── CorpusFormatError (422)      a post file that cannot be parsed (names file and line)
    ├── IndexNotBuiltError (503)     no index on disk yet: run `rag ingest`
    ├── IndexIncompatibleError (409) index built with other settings, or corrupt
    ├── IndexUnavailableError (503)  the server could not load or build its index (disk, corruption)
    ├── IndexWriteError (503)        the index could not be written (disk full, permissions)
    ├── IngestLockedError (409)      another ingest holds the index folder's lock (names it)
    ├── UnknownBackendError (400)    also a KeyError: unknown LLM backend name
    ├── BackendError (502)           an LLM backend failed (timeout, refused, bad output)
    ├── InvalidRequestError (422)    input the library refuses (bad filter, empty query, ...)
    ├── NotFoundError (404)          an unknown passage or document id
    ├── UnauthorizedError (401)      no API key, or a wrong one, where one is required
    ├── RateLimitedError (429)       over the per-client rate; says when to retry
    ├── OverloadedError (503)        every slot for expensive requests stayed busy; says when to retry
    └── DeadlineExceededError (504)  the request ran past RAG_REQUEST_TIMEOUT

This module does not import FastAPI: the library must stay usable without the web layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class RagError(Exception):
    """Base of every error this library raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CorpusFormatError(RagError):
    """A post file that does not follow the blog export format."""

    status = 422
    code = "corpus_format"

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


class IndexNotBuiltError(RagError):
    """No index exists where one was expected."""

    status = 503
    code = "index_not_built"


class IndexIncompatibleError(RagError):
    """The index on disk was built differently (other model, chunking, corpus) or is corrupt."""

    status = 409
    code = "index_incompatible"


class IndexUnavailableError(RagError):
    """A server whose index could not be loaded or built: every query is refused until it is fixed.

    Its message is what a client sees, so it says what failed without the server's paths; the full
    cause (the chained exception) goes to the server log."""

    status = 503
    code = "index_unavailable"


class IndexWriteError(RagError):
    """Writing a new index failed (disk full, file too large, permissions); the previous one is kept."""

    status = 503
    code = "index_write_failed"


class IngestLockedError(RagError):
    """Another ingest (`rag ingest`, or a server ingesting its data folder) is writing this index
    folder; the message names it: what it is, its pid and since when."""

    status = 409
    code = "ingest_locked"


class UnknownBackendError(RagError, KeyError):
    """A backend name that no registered backend answers to."""

    status = 400
    code = "unknown_backend"

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return self.message


class BackendError(RagError):
    """An LLM backend failed: timeout, refused connection, server error or malformed output."""

    status = 502
    code = "backend_error"


class InvalidRequestError(RagError):
    """Input that the library refuses, with a message saying what is wrong."""

    status = 422
    code = "invalid_request"


class NotFoundError(RagError):
    """An id (passage, document) that the index does not hold."""

    status = 404
    code = "not_found"


class UnauthorizedError(RagError):
    """A request without a valid API key where the server requires one."""

    status = 401
    code = "unauthorized"


class RetryLater:
    """Mixin for a refusal that passes: `retry_after` is the whole seconds (>= 1) to wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)  # type: ignore[call-arg]  # the RagError beside it in the MRO
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimitedError(RetryLater, RagError):
    """A client over its request rate."""

    status = 429
    code = "rate_limited"


class OverloadedError(RetryLater, RagError):
    """No slot for an expensive request came free within the queue timeout."""

    status = 503
    code = "overloaded"


class DeadlineExceededError(RagError):
    """A request that ran past its deadline before its response could start."""

    status = 504
    code = "deadline_exceeded"


ECHO_LIMIT = 64  # characters of a client's value an error message quotes


def clipped(value: str, limit: int = ECHO_LIMIT) -> str:
    """A value a client sent (an id, a path, a field name) as an error message shows it: past
    `limit` characters, cut short with an ellipsis, so a 10 KB id is not sent back whole."""
    return value if len(value) <= limit else value[:limit] + "…"


def echoed(value: str, limit: int = ECHO_LIMIT) -> str:
    """`clipped`, in quotes."""
    return repr(clipped(value, limit))


def describe_validation(
    errors: Iterable[Mapping[str, Any]], whole: str = "body", unknown: str = "unknown field"
) -> str:
    """Pydantic's errors as one message, 'field.path: what is wrong' joined by '; '. `whole` names
    an error on the value itself; a name the model does not know is called `unknown`."""
    parts = []
    for err in errors:
        # A step may be a name the client made up (an unknown field), of any length.
        where = ".".join(clipped(str(p)) for p in err.get("loc", ()) if p != "body") or whole
        message = unknown if err.get("type") == "extra_forbidden" else str(err.get("msg", "invalid"))
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
