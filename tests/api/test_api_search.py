"""The search API contract, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from rag.settings import Settings
from tests.conftest import DATA, LiveServer

CITATION_FIELDS = {"document_id", "title", "date", "kind", "comment", "reply", "source", "start", "end"}


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_search_returns_contract_shape_with_exact_citations(client: httpx.Client) -> None:
    r = client.post("/v1/search", json={"query": "Serious Further Offence reviews quality assurance"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"results", "took_ms"} and body["took_ms"] >= 0
    assert len(body["results"]) == 5
    for result in body["results"]:
        assert set(result) == {"id", "text", "score", "citation"}
        assert set(result["citation"]) == CITATION_FIELDS
        c = result["citation"]
        raw = (DATA / c["source"]).read_text(encoding="utf-8")
        assert " ".join(raw[c["start"] : c["end"]].split()) == " ".join(result["text"].split())
    assert "Serious Further Offence" in body["results"][0]["text"]


def test_search_k_and_filters(client: httpx.Client) -> None:
    r = client.post(
        "/v1/search",
        json={"query": "staff", "k": 12, "filters": {"kind": ["reply"], "date_from": "2019-01-01"}},
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 12
    assert all(x["citation"]["kind"] == "reply" and x["citation"]["date"] >= "2019-01-01" for x in results)


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ({"query": ""}, 422, "query"),
        ({"query": "   "}, 422, "query is empty"),
        ({"query": "x" * 1_000_000}, 422, "limit"),
        ({"query": "ok", "k": 0}, 422, "k"),
        ({"query": "ok", "k": 51}, 422, "k"),
        ({"query": "ok", "k": "five"}, 422, "k"),
        ({"query": 42}, 422, "query"),
        ({"query": "ok", "filters": {"colour": "red"}}, 422, "filters.colour: unknown field"),
        ({"query": "ok", "filters": {"kind": "tweet"}}, 422, "filters.kind"),
        ({"query": "ok", "filters": {"date_from": "yesterday"}}, 422, "date_from"),
        ({"query": "ok", "filters": {"date_from": "2020-01-02", "date_to": "2020-01-01"}}, 422, "after"),
        ({"query": "ok", "extra": 1}, 422, "extra: unknown field"),
        ({}, 422, "query"),
    ],
)
def test_search_bad_input_gets_4xx_with_message(
    client: httpx.Client, payload: dict, status: int, needle: str
) -> None:
    r = client.post("/v1/search", json=payload)
    assert r.status_code == status
    error = r.json()["error"]
    assert needle in error["message"], error
    assert error["code"]


def test_search_malformed_json_and_oversized_body(client: httpx.Client) -> None:
    r = client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post(
        "/v1/search", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_search_refuses_an_oversized_chunked_body_without_a_length(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked, with no Content-Length
        for _ in range(48):
            yield b"x" * 65536

    r = client.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == {"code": "too_large", "message": r.json()["error"]["message"]}
    assert "limit" in r.json()["error"]["message"]
    assert client.post("/v1/search", json={"query": "probation"}).status_code == 200


def test_passage_resolves_search_id_with_context_and_parent(client: httpx.Client) -> None:
    hits = client.post(
        "/v1/search", json={"query": "fawning NW Twitter accounts", "k": 5, "filters": {"kind": "reply"}}
    )
    first = hits.json()["results"][0]
    r = client.get(f"/v1/passages/{first['id']}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == first["id"] and body["text"] == first["text"]
    assert body["citation"] == first["citation"]
    assert (
        first["text"] in body["context"]["node"]["text"] or body["context"]["node"]["text"] in first["text"]
    )
    parent = body["context"]["parent"]
    assert parent["kind"] == "comment" and parent["comment"] == body["citation"]["comment"]


def test_passage_unknown_id_is_404(client: httpx.Client) -> None:
    r = client.get("/v1/passages/nope-123")
    assert r.status_code == 404 and "nope-123" in r.json()["error"]["message"]


def test_unknown_route_uses_error_shape(client: httpx.Client) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_openapi_documents_the_contract(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/passages/{passage_id}", "/healthz", "/readyz"} <= set(spec["paths"])


def test_readyz_is_503_until_the_index_loads_then_200(tmp_path: Path) -> None:
    """A cold server builds its index in the background; /healthz answers meanwhile."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text(
        (DATA / "003_ea05dc3451fe564a.txt").read_text(encoding="utf-8"), encoding="utf-8"
    )
    settings = Settings(data_dir=data, index_dir=tmp_path / "index", _env_file=None)  # type: ignore[call-arg]
    server = LiveServer(create_app(settings))
    server.thread.start()
    try:
        seen = set()
        for _ in range(600):
            try:
                seen.add(httpx.get(f"{server.url}/readyz", timeout=2).status_code)
                if 200 in seen:
                    break
                early = httpx.post(f"{server.url}/v1/search", json={"query": "x"}, timeout=5)
                assert early.status_code in (503, 200)
            except httpx.TransportError:
                pass
            import time

            time.sleep(0.1)
        assert 200 in seen
        assert (
            httpx.post(f"{server.url}/v1/search", json={"query": "manifesto"}, timeout=30).status_code == 200
        )
    finally:
        server.__exit__(None, None, None)
