"""A small Python client for the HTTP API: typed results, clear exceptions.

    from rag.client import Client

    with Client("http://127.0.0.1:8000") as rag:
        for match in rag.cite("a botched renationalisation"):
            print(match.citation.source, match.start, match.end)

Every method returns dataclasses whose fields mirror the JSON the server sends (so
``dataclasses.asdict`` gives the wire format back); pydantic checks the server's JSON against them and
ignores fields a newer server adds. HTTP failures raise a `ClientError`::

    ClientError
    ├── ServerUnreachable      no answer: refused connection, timeout, a broken response
    └── ApiError               the server's status, code and message
        ├── BadRequest         4xx: the message says what to change
        │   └── Unauthorized   401: no valid API key
        ├── NotFound           404: an unknown passage or document id
        ├── RetryLater         the server refused for now and said when to retry (`retry_after`)
        │   ├── RateLimited    429: over this client's rate limit
        │   └── Overloaded     503 `overloaded`: no slot for an ask or batch came free in time
        ├── NotReady           503: the index is loading, or failed to load
        └── ServerError        other 5xx

A `RetryLater` is not a `BadRequest`: nothing about the request is wrong, and it passes. By
default the client waits it out, as the server's ``Retry-After`` says, and sends the request
again, up to `max_retries` times and `max_wait` seconds of waiting per call; it raises the
`RetryLater` only when those bounds run out. Every call is safe to repeat after such a refusal:
the server sends it before any work starts (a streamed answer that has started is never sent
again; a refusal comes before its first byte). These are not `RagError`s: they describe a remote
call, and the server's own error code is kept in `ApiError.code`. Not here: any retrieval logic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, ServerSentEvent
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"

# ---------------------------------------------------------------- errors


class ClientError(Exception):
    """Any failure talking to the server; `message` says what happened and what to try."""

    status: int = 502
    code: str = "client_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerUnreachable(ClientError):
    """No answer: refused connection, timeout, or a broken response."""

    code = "server_unreachable"


class ApiError(ClientError):
    """The server answered with an error: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code
        self.detail = message


class BadRequest(ApiError):
    """The server refused the request (4xx): the message says what to change."""


class NotFound(ApiError):
    """An unknown passage or document id (404)."""


class Unauthorized(BadRequest):
    """The server wants an API key (401): pass `api_key` (the CLI sends RAG_API_KEY)."""


class RetryLater(ApiError):
    """The server refused the request for now and said when to try again: `retry_after` seconds
    (None when it did not say). Raised once the client's own retries have run out."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """Over the server's rate limit for this client (429): slow down, or raise `max_wait`."""


class Overloaded(RetryLater):
    """Every slot for asks and batches stayed busy (503 `overloaded`): the server is saturated."""


class NotReady(ApiError):
    """The server is still loading its index, or failed to (503); retry when /readyz is 200."""


class ServerError(ApiError):
    """The server failed (5xx)."""


def _error_for(response: httpx.Response) -> ApiError:
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200] or response.reason_phrase
    status = response.status_code
    if status == 401:
        return Unauthorized(status, code, f"{message} (set RAG_API_KEY to a key the server accepts)")
    if status == 404:
        return NotFound(status, code, message)
    if status == 429:
        return RateLimited(status, code, message, _retry_after(response.headers))
    if status == 503 and code == "overloaded":
        return Overloaded(status, code, message, _retry_after(response.headers))
    if status == 503:
        return NotReady(status, code, message)
    if 400 <= status < 500:
        return BadRequest(status, code, message)
    return ServerError(status, code, message)


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP-date (RFC 9110
    10.2.3); None when it is missing or unreadable, 0 for a date already past."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": a time in UTC, its zone unknown
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Citation:
    """Where a passage comes from: `raw_file_text[start:end]` is its text, up to whitespace."""

    document_id: str
    title: str
    date: str | None
    kind: str
    comment: int | None
    reply: int | None
    source: str
    start: int
    end: int


@dataclass(frozen=True)
class SearchResult:
    id: str
    text: str
    score: float
    citation: Citation


@dataclass(frozen=True)
class SearchResponse:
    results: list[SearchResult]
    took_ms: float


@dataclass(frozen=True)
class QuoteMatch:
    """Where a quote comes from: raw[start:end] is the quote when `exact`, else the passage."""

    exact: bool
    start: int
    end: int
    score: float
    passage_id: str
    passage_ids: list[str]
    citation: Citation


@dataclass(frozen=True)
class _CiteResponse:
    matches: list[QuoteMatch]


@dataclass(frozen=True)
class NodeText:
    """A whole post body, comment or reply, located in its raw file."""

    kind: str
    comment: int | None
    reply: int | None
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class PassageContext:
    before: str
    after: str
    node: NodeText
    parent: NodeText | None = None


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    citation: Citation
    context: PassageContext


@dataclass(frozen=True)
class DocumentSummary:
    id: str
    title: str
    date: str | None
    source: str
    comments: int
    replies: int


@dataclass(frozen=True)
class Reply:
    number: int
    start: int
    end: int
    text: str
    passage_ids: list[str]


@dataclass(frozen=True)
class Comment:
    number: int
    start: int
    end: int
    text: str
    passage_ids: list[str]
    replies: list[Reply]


@dataclass(frozen=True)
class Body:
    start: int
    end: int
    text: str
    passage_ids: list[str]


@dataclass(frozen=True)
class Document:
    """A whole post: its body and comment tree."""

    id: str
    title: str
    date: str | None
    source: str
    body: Body
    comments: list[Comment]


@dataclass(frozen=True)
class AskCitation:
    """A passage an answer cites as [n]."""

    n: int
    id: str
    text: str
    score: float
    citation: Citation


@dataclass(frozen=True)
class Support:
    """How well an answer's cited passages match its question: `level` strong, weak or none."""

    level: str
    score: float


@dataclass(frozen=True)
class Answer:
    """An answer from POST /v1/ask, citing passages as [n]."""

    answer: str
    citations: list[AskCitation]
    backend: str
    abstained: bool
    warnings: list[str]
    took_ms: float
    query: str
    support: Support | None = None  # None from a server older than the field


@cache
def _adapter(shape: Any) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def _validate(shape: Any, data: Any) -> Any:
    try:
        return _adapter(shape).validate_python(data)
    except ValidationError as exc:
        raise ServerUnreachable(f"the server's response does not have the expected shape: {exc}") from exc


def _parse(kind: type[T], data: Any) -> T:
    """`data` (decoded JSON) as `kind`, or `ServerUnreachable` when the server sent something else."""
    value: T = _validate(kind, data)
    return value


def _parse_list(kind: type[T], data: Any, key: str) -> list[T]:
    """The list under `key` in `data`, each item as `kind`."""
    items = data.get(key) if isinstance(data, dict) else None
    value: list[T] = _validate(list[kind], items)  # type: ignore[valid-type]
    return value


# ---------------------------------------------------------------- client


class Client:
    """Talks to a running server (``rag serve``). Use as a context manager, or call `close()`.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request.
        http: an `httpx.Client` to send requests with instead (e.g. Starlette's `TestClient`,
            or one with an `httpx.MockTransport`); `base_url` and `timeout` are then its own.
        api_key: sent as ``Authorization: Bearer <key>`` to a server that requires keys.
        max_retries: how many times one call is sent again after a `RetryLater` refusal (429, or
            503 `overloaded`); 0 raises the first one.
        max_wait: the most seconds one call spends waiting between those tries; a refusal whose
            ``Retry-After`` would take it past this is raised at once, without waiting.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
        api_key: str | None = None,
        max_retries: int = 10,
        max_wait: float = 60.0,
    ) -> None:
        if max_retries < 0 or max_wait < 0:
            raise ValueError(f"max_retries ({max_retries}) and max_wait ({max_wait}) cannot be negative")
        self._owned = http is None
        self._http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        if api_key:
            self._http.headers["Authorization"] = f"Bearer {api_key}"
        self.max_retries = max_retries
        self.max_wait = max_wait

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, stream: bool = False
    ) -> httpx.Response:
        """The server's successful response, after waiting out its `RetryLater` refusals within
        the bounds; any other error is raised at once. With `stream`, the body is left unread
        (close the response); a refusal is read and closed before the request is sent again."""
        request = self._http.build_request(method, path, json=body)
        attempt, waited = 0, 0.0
        while True:
            try:
                response = self._http.send(request, stream=stream)
                if not response.is_error:
                    return response
                with closing(response):
                    response.read()
            except httpx.HTTPError as exc:  # connection refused, timeout, protocol error
                raise ServerUnreachable(
                    f"cannot reach the server at {self._http.base_url} ({exc}); is `rag serve` running?"
                ) from exc
            error = _error_for(response)
            if not isinstance(error, RetryLater) or attempt == self.max_retries:
                raise error
            # Without a Retry-After (a proxy's 429, say): back off 1, 2, 4 ... seconds.
            delay = error.retry_after if error.retry_after is not None else min(2.0**attempt, 30.0)
            if waited + delay > self.max_wait:
                raise error
            time.sleep(delay)
            attempt, waited = attempt + 1, waited + delay

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self._send(method, path, body)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerUnreachable(
                f"the server at {self._http.base_url} sent a response that is not JSON"
            ) from exc

    def search(self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None) -> SearchResponse:
        """The `k` passages most relevant to `query`; `filters` as in POST /v1/search."""
        body: dict[str, Any] = {"query": query, "k": k}
        if filters:
            body["filters"] = dict(filters)
        return _parse(SearchResponse, self._request("POST", "/v1/search", body))

    def search_batch(self, queries: Iterable[str | Mapping[str, Any]], k: int = 5) -> list[SearchResponse]:
        """One response per query, in order; a query is a string or a full search request."""
        items = [{"query": q, "k": k} if isinstance(q, str) else dict(q) for q in queries]
        data = self._request("POST", "/v1/search/batch", {"queries": items})
        return _parse_list(SearchResponse, data, "responses")

    def cite(self, text: str, k: int = 5) -> list[QuoteMatch]:
        """Where `text` occurs in the archive (exact matches first), or the closest passages."""
        data = self._request("POST", "/v1/cite", {"text": text, "k": k})
        return _parse_list(QuoteMatch, data, "matches")

    def cite_batch(self, quotes: Iterable[str | Mapping[str, Any]], k: int = 5) -> list[list[QuoteMatch]]:
        """`cite` for up to 100 quotes in one request, in order; a quote is a string or a full cite
        request (``{"text": ..., "k": ...}``)."""
        data = self._request("POST", "/v1/cite/batch", {"requests": _cite_items(quotes, k)})
        return [r.matches for r in _parse_list(_CiteResponse, data, "responses")]

    def passage(self, passage_id: str) -> Passage:
        """A passage by id, with its citation and surrounding text. Raises `NotFound`."""
        return _parse(Passage, self._request("GET", f"/v1/passages/{_segment(passage_id)}"))

    def documents(self) -> list[DocumentSummary]:
        """Every post: id, title, date, source, and counts of comments and replies."""
        data = self._request("GET", "/v1/documents")
        return _parse_list(DocumentSummary, data, "documents")

    def document(self, document_id: str) -> Document:
        """A whole post with its comment tree. Raises `NotFound`."""
        return _parse(Document, self._request("GET", f"/v1/documents/{_segment(document_id)}"))

    def ask(
        self,
        question: str,
        k: int = 5,
        backend: str | None = None,
        filters: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Answer:
        """A cited answer from POST /v1/ask (whole, not streamed); `backend` defaults to the server's."""
        body = _ask_body(question, k, backend, filters, options)
        return _parse(Answer, self._request("POST", "/v1/ask", body))

    def ask_stream(
        self,
        question: str,
        k: int = 5,
        backend: str | None = None,
        filters: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Iterator[str | Answer]:
        """The answer's text as the server streams it, then the finished `Answer` (same as `ask`)."""
        body = {**_ask_body(question, k, backend, filters, options), "stream": True}
        try:
            with closing(self._send("POST", "/v1/ask", body, stream=True)) as response:
                for event in EventSource(response).iter_sse():
                    if event.event == "delta":
                        yield str(_validate(dict[str, str], _event_json(event)).get("text", ""))
                    elif event.event == "done":
                        yield _parse(Answer, _event_json(event))
                        return
        except httpx.HTTPError as exc:
            url = self._http.base_url
            raise ServerUnreachable(f"the answer stream from {url} broke off ({exc})") from exc
        raise ServerUnreachable(f"the answer stream from {self._http.base_url} ended without its answer")


def _ask_body(
    question: str,
    k: int,
    backend: str | None,
    filters: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"question": question, "k": k}
    for name, value in (("backend", backend), ("filters", filters), ("options", options)):
        if value:
            body[name] = value if isinstance(value, str) else dict(value)
    return body


def _cite_items(quotes: Iterable[str | Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    return [{"text": q, "k": k} if isinstance(q, str) else dict(q) for q in quotes]


def _event_json(event: ServerSentEvent) -> Any:
    try:
        return event.json()
    except ValueError as exc:
        raise ServerUnreachable(f"the server streamed an event that is not JSON ({exc})") from exc


def _segment(value: str) -> str:
    """An id as one URL path segment: a slash or space must not change the route."""
    if not value.strip():
        raise BadRequest(400, "invalid_request", "id is empty")
    return quote(value, safe="")
