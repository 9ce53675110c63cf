"""POST /v1/search/batch on the live server: many queries, answers in order, one error shape."""

from __future__ import annotations

import httpx
import pytest


def test_search_batch_answers_each_query_in_order_like_single_search(client: httpx.Client) -> None:
    queries = [
        {"query": "pay progression", "k": 3},
        {"query": "Serco contracts"},
        {"query": "probation", "k": 2, "filters": {"kind": "reply"}},
    ]
    body = client.post("/v1/search/batch", json={"queries": queries}).raise_for_status().json()
    assert len(body["responses"]) == 3 and body["took_ms"] >= 0
    for query, response in zip(queries, body["responses"], strict=True):
        single = client.post("/v1/search", json=query).json()
        assert [r["id"] for r in response["results"]] == [r["id"] for r in single["results"]]
    assert all(r["citation"]["kind"] == "reply" for r in body["responses"][2]["results"])


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"queries": []}, "queries"),
        ({"queries": [{"query": "ok"}, {"query": "  "}]}, "queries[1].query is empty"),
        ({"queries": [{"query": "ok"}] * 101}, "queries"),
        ({"queries": [{"query": "ok", "k": 99}]}, "k"),
        ({"queries": ["just a string"]}, "queries"),
        ({"queries": [{"query": "ok"}], "extra": 1}, "unknown field"),
    ],
)
def test_search_batch_bad_input_gets_422_with_message(
    client: httpx.Client, payload: dict[str, object], needle: str
) -> None:
    response = client.post("/v1/search/batch", json=payload)
    assert response.status_code == 422
    assert needle in response.json()["error"]["message"]
