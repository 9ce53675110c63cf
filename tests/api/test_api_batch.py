"""POST /v1/search/batch and /v1/cite/batch on the live server: many requests, answers in order,
one error shape."""

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


QUOTE = "It is too early to confirm the impact on CRC staff."


def test_cite_batch_answers_each_quote_in_order_like_single_cite(client: httpx.Client) -> None:
    requests = [
        {"text": QUOTE},
        {"text": "zebras juggling quantum marmalade", "k": 2},
        {"text": "the probation service"},
        {"text": "renationalisation of probation", "k": 3},
    ]
    body = client.post("/v1/cite/batch", json={"requests": requests}).raise_for_status().json()
    assert len(body["responses"]) == len(requests) and body["took_ms"] >= 0
    for request, response in zip(requests, body["responses"], strict=True):
        single = client.post("/v1/cite", json=request).json()
        assert [(m["passage_id"], m["start"], m["exact"]) for m in response["matches"]] == [
            (m["passage_id"], m["start"], m["exact"]) for m in single["matches"]
        ]
    assert body["responses"][0]["matches"][0]["exact"]
    assert len(body["responses"][1]["matches"]) == 2 and not body["responses"][1]["matches"][0]["exact"]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"requests": []}, "requests"),
        ({"requests": [{"text": "ok"}, {"text": "  "}]}, "requests[1].text is empty"),
        ({"requests": [{"text": "ok"}, {"text": "?!"}]}, "requests[1].text has no letters or digits"),
        ({"requests": [{"text": "ok"}] * 101}, "requests"),
        ({"requests": [{"text": "ok", "k": 99}]}, "k"),
        ({"requests": ["just a string"]}, "requests"),
        ({"requests": [{"text": "ok"}], "extra": 1}, "unknown field"),
        ({"queries": [{"text": "ok"}]}, "requests"),
    ],
)
def test_cite_batch_bad_input_gets_422_with_message(
    client: httpx.Client, payload: dict[str, object], needle: str
) -> None:
    response = client.post("/v1/cite/batch", json=payload)
    assert response.status_code == 422
    assert needle in response.json()["error"]["message"]
