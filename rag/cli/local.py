"""The CLI's lookups over the local index, without a server: the library's answers in the shapes
`rag.client.Client` returns, so a command prints the same whether or not it is given --url.

Each method validates its request with the API's own request model, runs the checks and library
calls the route runs, and builds the API's response model from the result; errors carry the status,
code and message the server would have sent. This is the CLI's layer, which may import `api`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.checks import check_history, check_query
from api.models import (
    AskRequest,
    AskResponse,
    BatchCiteRequest,
    BatchSearchRequest,
    CiteRequest,
    DocumentResponse,
    DocumentsResponse,
    PassageResponse,
    QuoteMatch,
    SearchRequest,
    SearchResponse,
)
from api.routes import cite as cite_route
from rag import client
from rag.answer.answering import Answer, Answerer, final_answer
from rag.errors import RagError, describe_validation
from rag.search.passages import resolve
from rag.search.quotes import Quoter
from rag.search.retrieval import Retriever, timed_search
from rag.settings import Settings

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@contextmanager
def _as_served() -> Iterator[None]:
    """Library and validation errors as the client's errors for the response the server sends."""
    try:
        yield
    except ValidationError as exc:
        raise client.BadRequest(422, "invalid_request", describe_validation(exc.errors())) from exc
    except RagError as exc:
        status, code = exc.status, exc.code
        kind = {404: client.NotFound, 503: client.NotReady}.get(status)
        kind = kind or (client.BadRequest if 400 <= status < 500 else client.ServerError)
        raise kind(status, code, exc.message) from exc


def _request(model: type[M], body: Mapping[str, Any]) -> M:
    return model.model_validate(dict(body))


def _shaped(kind: type[T], response: BaseModel) -> T:
    return client._parse(kind, response.model_dump(mode="json"))


class LocalClient:
    """`rag.client.Client`'s lookups, answered in-process by the library over `retriever`."""

    def __init__(self, settings: Settings, retriever: Retriever) -> None:
        self.settings = settings
        self.retriever = retriever

    @cached_property
    def _quoter(self) -> Quoter:
        return Quoter(self.retriever)

    def search(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> client.SearchResponse:
        body: dict[str, Any] = {"query": query, "k": k}
        if filters:
            body["filters"] = dict(filters)
        with _as_served():
            request = _request(SearchRequest, body)
            check_query(request.query, self.settings.max_query_chars)
            found = request.filters.to_filters() if request.filters else None
            response = SearchResponse.of(*timed_search(self.retriever, request.query, request.k, found))
        return _shaped(client.SearchResponse, response)

    def search_batch(
        self, queries: Iterable[str | Mapping[str, Any]], k: int = 5
    ) -> list[client.SearchResponse]:
        items = [{"query": q, "k": k} if isinstance(q, str) else dict(q) for q in queries]
        with _as_served():
            batch = _request(BatchSearchRequest, {"queries": items})
            for n, r in enumerate(batch.queries):
                check_query(r.query, self.settings.max_query_chars, field=f"queries[{n}].query")
            requests = [(r.query, r.k, r.filters.to_filters() if r.filters else None) for r in batch.queries]
            responses = [SearchResponse.of(hits, ms) for hits, ms in self.retriever.search_many(requests)]
        return [_shaped(client.SearchResponse, r) for r in responses]

    def cite(self, text: str, k: int = 5) -> list[client.QuoteMatch]:
        with _as_served():
            request = _request(CiteRequest, {"text": text, "k": k})
            check_query(request.text, self.settings.max_query_chars, field="text")
            matches = [QuoteMatch.of(m) for m in self._quoter.cite(request.text, request.k)]
        return [_shaped(client.QuoteMatch, m) for m in matches]

    def cite_batch(
        self, quotes: Iterable[str | Mapping[str, Any]], k: int = 5
    ) -> list[list[client.QuoteMatch]]:
        with _as_served():
            batch = _request(BatchCiteRequest, {"requests": client._cite_items(quotes, k)})
            response = cite_route.cite_batch(batch, self._quoter, self.settings)
        return [[_shaped(client.QuoteMatch, m) for m in r.matches] for r in response.responses]

    def passage(self, passage_id: str) -> client.Passage:
        with _as_served():
            response = PassageResponse.of(resolve(self.retriever.index, _id(passage_id)))
        return _shaped(client.Passage, response)

    def documents(self) -> list[client.DocumentSummary]:
        response = DocumentsResponse.of(self.retriever.index)
        return [_shaped(client.DocumentSummary, d) for d in response.documents]

    def document(self, document_id: str) -> client.Document:
        with _as_served():
            response = DocumentResponse.of(self.retriever.index, _id(document_id))
        return _shaped(client.Document, response)

    def _answer(
        self,
        question: str,
        k: int,
        backend: str | None,
        filters: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> Iterator[str | Answer]:
        body = client._ask_body(question, k, backend, filters, options)
        with _as_served():
            request = _request(AskRequest, body)
            check_query(request.question, self.settings.max_query_chars, "question")
            check_history(request.history)
            found = request.filters.to_filters() if request.filters else None
            answerer = Answerer.for_backend(request.backend, self.settings, self.retriever, request.options)
            return answerer.stream(request.question, request.k, found, request.history)

    def ask(
        self,
        question: str,
        k: int = 5,
        backend: str | None = None,
        filters: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> client.Answer:
        items = self._answer(question, k, backend, filters, options)
        answer = final_answer(items)
        return _shaped(client.Answer, AskResponse.of(answer))

    def ask_stream(
        self,
        question: str,
        k: int = 5,
        backend: str | None = None,
        filters: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Iterator[str | client.Answer]:
        for item in self._answer(question, k, backend, filters, options):
            if isinstance(item, Answer):
                yield _shaped(client.Answer, AskResponse.of(item))
                return
            if item:  # the server sends no empty delta
                yield item


def _id(value: str) -> str:
    """An id as the client would send it: a blank one is refused before any lookup."""
    client._segment(value)
    return value
