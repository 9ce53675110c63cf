"""What an operator sees (api/metrics.py, api/telemetry.py): Prometheus text at /metrics, one JSON
log line per request, and the request id header; against the session's real server."""

from __future__ import annotations

import concurrent.futures
import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from rag.ingest.index import Index
from rag.settings import Settings
from tests.conftest import RagServe, logged_requests

SEARCH = {"query": "pay progression", "k": 2}


Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(client: httpx.Client | TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return sum(v for have, v in found.get(name, []) if labels.items() <= have.items())


def test_metrics_parse_as_prometheus_text_and_count_requests_by_route_template(
    client: httpx.Client, index: Index
) -> None:
    before = samples(client)
    passage = index.chunks[0].id
    fresh = {"query": f"pay progression {uuid.uuid4().hex}"}  # not in the query cache: the model runs
    assert client.post("/v1/search", json=fresh).status_code == 200
    assert client.get(f"/v1/passages/{passage}").status_code == 200
    assert client.get("/v1/passages/000-nope").status_code == 404
    assert client.get("/nowhere").status_code == 404
    after = samples(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("rag_http_requests_total", route="/v1/search", status="200", method="POST") == 1
    assert grew("rag_http_requests_total", route="/v1/passages/{passage_id}", status="200") == 1
    assert grew("rag_http_requests_total", route="/v1/passages/{passage_id}", status="404") == 1
    assert grew("rag_http_requests_total", route="unmatched", status="404") == 1
    assert not any(passage in labels.get("route", "") for labels, _ in after["rag_http_requests_total"])
    assert grew("rag_http_errors_total", code="not_found") == 2
    assert grew("rag_http_request_duration_seconds_count", route="/v1/search") == 1
    assert value(after, "rag_index_documents") == index.manifest["documents"]
    assert value(after, "rag_index_chunks") == index.manifest["chunks"]
    assert value(after, "rag_index_ready") == 1
    assert after["rag_index_info"][0][0]["version"] == index.manifest["corpus_fingerprint"][:12]
    assert grew("rag_model_encode_seconds_count") >= 1 and value(after, "rag_model_encode_seconds_sum") > 0
    # the fresh query: one pass, alone on an idle server (wide), serving one query
    assert (
        grew("rag_query_passes_total", lane="wide") == 1
        and grew("rag_query_passes_total", lane="narrow") == 0
    )
    assert grew("rag_query_encodes_total") == 1
    assert value(after, "rag_expensive_slots") >= 1


def test_request_id_is_made_or_kept_and_returned(client: httpx.Client) -> None:
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32 and made != client.get("/healthz").headers["X-Request-ID"]
    sent = "edge-7f3a:42"
    assert (
        client.post("/v1/search", json=SEARCH, headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent
    )
    for insane in ("has spaces in it", "x" * 200, ""):
        returned = client.get("/healthz", headers={"X-Request-ID": insane}).headers["X-Request-ID"]
        assert returned != insane and len(returned) == 32
    error = client.get("/v1/passages/000-nope", headers={"X-Request-ID": sent})
    assert error.headers["X-Request-ID"] == sent  # error responses carry it too


@pytest.fixture
def request_lines() -> Iterator[list[dict[str, object]]]:
    with logged_requests() as lines:
        yield lines


def test_one_json_log_line_per_request(client: httpx.Client, request_lines: list[dict[str, object]]) -> None:
    client.post("/v1/search", json=SEARCH, headers={"X-Request-ID": "trace-1"})
    stream = {"question": "When did CRCs start?", "stream": True}  # a stream, read to its end
    client.post("/v1/ask", json=stream, headers={"X-Request-ID": "trace-2"})
    client.get("/v1/passages/000-nope", headers={"X-Request-ID": "trace-3"})

    # The line is written once the response has gone out (its duration runs to the end), so the
    # client may have the last response a moment before the server has logged it, and an earlier
    # test's last line may arrive after this test's handler is attached: keep this test's own.
    def mine() -> list[dict[str, object]]:
        return [line for line in request_lines if str(line["request_id"]).startswith("trace-")]

    deadline = time.monotonic() + 10
    while len(mine()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(mine()) == 3
    search, ask, missing = mine()
    assert set(search) == {
        "ts",
        "request_id",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "key",
        "client",
        "error",
        "pid",
    }
    assert search["request_id"] == "trace-1" and search["route"] == "/v1/search" and search["status"] == 200
    assert search["client"] == "127.0.0.1" and search["key"] is None and search["error"] is None
    assert search["pid"] == os.getpid()  # the in-process server
    assert ask["route"] == "/v1/ask" and ask["status"] == 200
    assert isinstance(ask["duration_ms"], float) and ask["duration_ms"] > 0
    assert missing["status"] == 404 and missing["error"] == "not_found"
    assert missing["route"] == "/v1/passages/{passage_id}"


def test_readiness_probes_while_the_index_loads_are_not_counted_as_internal_errors(
    settings: Settings,
) -> None:
    loading = TestClient(create_app(settings))  # outside `with`: no lifespan, so no index yet
    assert loading.get("/readyz").status_code == 503
    found = samples(loading)
    assert value(found, "rag_http_requests_total", route="/readyz", status="503") == 1
    assert value(found, "rag_http_errors_total", code="internal_error") == 0


def test_metrics_under_two_workers_count_the_whole_server_whichever_worker_answers(
    two_workers: RagServe, index: Index
) -> None:
    def scrape() -> Samples:
        with httpx.Client(base_url=two_workers.url, timeout=30) as client:  # a new connection each
            return samples(client)

    def search(request_id: str) -> int:
        headers = {"X-Request-ID": request_id}  # each on a connection of its own, so both workers take some
        return httpx.post(
            f"{two_workers.url}/v1/search", json=SEARCH, headers=headers, timeout=60
        ).status_code

    before = scrape()
    ids = [f"sum-{uuid.uuid4().hex[:8]}-{n}" for n in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(search, ids)) == [200] * 40
    deadline = time.monotonic() + 20  # each line is written just after its response
    while len(lines := [r for r in two_workers.requests() if r["request_id"] in ids]) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len({line["pid"] for line in lines}) == 2, "both workers answered some"
    for _ in range(6):  # whichever worker answers the scrape, it counts every worker's requests
        after = scrape()
        for name in ("rag_http_requests_total", "rag_http_request_duration_seconds_count"):
            grown = value(after, name, route="/v1/search") - value(before, name, route="/v1/search")
            assert grown == 40, name
        assert value(after, "rag_index_ready") == 1  # every worker is ready
        assert value(after, "rag_expensive_slots") == 2 * two_workers.slots_each()
        assert value(after, "rag_index_documents") == index.manifest["documents"]
        assert [labels["version"] for labels, v in after["rag_index_info"] if v == 1] == [
            index.manifest["corpus_fingerprint"][:12]
        ]
