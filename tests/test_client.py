"""rag.client.Client against the real server on 127.0.0.1: typed results and clear exceptions."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rag.client import (
    Answer,
    ApiError,
    AskCitation,
    BadRequest,
    Client,
    ClientError,
    Document,
    NotFound,
    NotReady,
    Passage,
    QuoteMatch,
    SearchResponse,
    ServerError,
    ServerUnreachable,
)
from rag.ingest.index import Index
from tests.conftest import LiveServer, free_port


@pytest.fixture
def rag(server: LiveServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def test_client_search_returns_typed_results_equal_to_the_wire(rag: Client, client: httpx.Client) -> None:
    response = rag.search("pay progression", k=3)
    assert isinstance(response, SearchResponse) and len(response.results) == 3
    wire = client.post("/v1/search", json={"query": "pay progression", "k": 3}).json()
    assert [dataclasses.asdict(r) for r in response.results] == wire["results"]


def test_client_search_with_filters(rag: Client, index: Index) -> None:
    doc = sorted(index.documents)[2]
    response = rag.search("probation", k=5, filters={"document_id": doc, "kind": ["comment"]})
    assert response.results
    assert all(r.citation.document_id == doc and r.citation.kind == "comment" for r in response.results)


def test_client_search_batch_answers_in_order(rag: Client) -> None:
    queries: list[str | dict[str, Any]] = [
        "pay progression",
        "Serco contracts",
        {"query": "renationalisation", "k": 2},
    ]
    responses = rag.search_batch(queries, k=3)
    assert [len(r.results) for r in responses] == [3, 3, 2]
    for query, response in zip(["pay progression", "Serco contracts"], responses, strict=False):
        assert [r.id for r in response.results] == [r.id for r in rag.search(query, k=3).results]


def test_client_cite_and_passage_round_trip_to_the_raw_text(rag: Client, index: Index) -> None:
    quote = "It is too early to confirm the impact on CRC staff."
    (match,) = rag.cite(quote)
    assert isinstance(match, QuoteMatch) and match.exact
    raw = index.documents[match.citation.document_id].raw
    assert raw[match.start : match.end] == quote
    passage = rag.passage(match.passage_id)
    assert isinstance(passage, Passage)
    assert passage.citation == match.citation
    assert quote in passage.context.node.text


def test_client_documents_and_document(rag: Client, index: Index) -> None:
    summaries = rag.documents()
    assert [d.id for d in summaries] == sorted(index.documents)
    doc = rag.document(summaries[0].id)
    assert isinstance(doc, Document)
    assert len(doc.comments) == summaries[0].comments
    assert sum(len(c.replies) for c in doc.comments) == summaries[0].replies


def test_client_ask_returns_a_typed_cited_answer(rag: Client, client: httpx.Client) -> None:
    question = "What did one commenter say would be in nobody's interest?"
    answer = rag.ask(question, k=3)
    assert isinstance(answer, Answer) and answer.answer and answer.backend
    assert all(isinstance(c, AskCitation) and c.citation.source for c in answer.citations)
    wire = client.post("/v1/ask", json={"question": question, "k": 3}).json()
    assert [c.id for c in answer.citations] == [c["id"] for c in wire["citations"]]
    with pytest.raises(BadRequest, match="backend"):
        rag.ask(question, backend="no-such-backend")


def test_client_ask_stream_yields_text_then_the_same_answer_as_ask(rag: Client) -> None:
    question = "What did one commenter say would be in nobody's interest?"
    items = list(rag.ask_stream(question, k=3))
    *pieces, final = items
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert isinstance(final, Answer)
    assert "".join(pieces) == final.answer
    assert [c.id for c in final.citations] == [c.id for c in rag.ask(question, k=3).citations]
    with pytest.raises(BadRequest, match="backend"):
        list(rag.ask_stream(question, backend="no-such-backend"))


def test_client_unknown_ids_raise_not_found(rag: Client) -> None:
    with pytest.raises(NotFound) as caught:
        rag.passage("000-nope")
    assert caught.value.status == 404 and caught.value.code == "not_found"
    assert "000-nope" in caught.value.message
    with pytest.raises(NotFound):
        rag.document("no/such doc")  # a slash stays inside the id, not a different route


def test_client_bad_input_raises_bad_request_with_the_servers_message(rag: Client) -> None:
    with pytest.raises(BadRequest, match="query is empty") as caught:
        rag.search("   ")
    assert caught.value.status == 422 and isinstance(caught.value, ApiError)
    with pytest.raises(BadRequest, match="k"):
        rag.cite("probation", k=0)
    with pytest.raises(BadRequest, match="id is empty"):
        rag.passage(" ")


def test_client_unreachable_server_raises_server_unreachable() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as rag,
        pytest.raises(ServerUnreachable) as caught,
    ):
        rag.documents()
    assert "rag serve" in caught.value.message
    assert isinstance(caught.value, ClientError)


class CannedServer(LiveServer):
    """A real HTTP server on 127.0.0.1 that answers every request with one canned response, and
    counts them: the failures our own server should never produce, seen from the client's side.
    A body that is not a string is sent as JSON; `headers` add to (or replace) the content type."""

    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self.requests = 0
        raw = body if isinstance(body, str) else json.dumps(body)
        kind = "text/html" if isinstance(body, str) else "application/json"
        sent = [
            (k.lower().encode(), v.encode()) for k, v in ({"content-type": kind} | (headers or {})).items()
        ]

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/readyz":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})
                return
            self.requests += 1
            await send({"type": "http.response.start", "status": status, "headers": sent})
            await send({"type": "http.response.body", "body": raw.encode()})

        super().__init__(app)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, {"error": {"code": "index_not_built", "message": "still loading"}}, NotReady),
        (500, {"error": {"code": "internal_error", "message": "boom"}}, ServerError),
        (502, "<html>bad gateway</html>", ServerError),
    ],
)
def test_client_maps_error_statuses_to_exceptions(status: int, body: object, error: type[ApiError]) -> None:
    with CannedServer(status, body) as canned, Client(canned.url) as rag, pytest.raises(error) as caught:
        rag.documents()
    assert caught.value.status == status
    assert str(status) in str(caught.value)


@pytest.mark.parametrize(
    "body", [{"documents": [{"id": "000"}]}, {"documents": "none"}, ["not", "an", "object"], "<html>"]
)
def test_client_response_of_the_wrong_shape_raises_server_unreachable(body: object) -> None:
    with (
        CannedServer(200, body) as canned,
        Client(canned.url) as rag,
        pytest.raises(ServerUnreachable) as caught,
    ):
        rag.documents()
    assert "expected shape" in caught.value.message or "not JSON" in caught.value.message
