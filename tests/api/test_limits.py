"""Fair use (api/limits.py) against real servers on 127.0.0.1: the rate limit per key and per
address (the server's rate under `rag serve --workers 2` too, and an address a client cannot pick
with X-Forwarded-For), the bound on concurrent expensive requests, and the per-request deadline.
The slow LLM is the one allowed stand-in: a real HTTP server on loopback speaking chat completions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api.limits import DEFAULT_RATE, TokenBuckets, applied_rate
from api.main import create_app
from api.security import KeyRing
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer, RagServe, cli_env, logged_requests

KEY_A, KEY_B = "limit-key-a", "limit-key-b"
SEARCH = {"query": "pay progression", "k": 1}
QUESTION = "When will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"
LLM_SECONDS = 3.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def slow_llm() -> FastAPI:
    """Answers every chat completion, after LLM_SECONDS."""
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        await asyncio.sleep(LLM_SECONDS)
        message = {"role": "assistant", "content": "From April 2021 [1]."}
        return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}

    return app


@pytest.fixture(scope="module")
def llm() -> Iterator[LiveServer]:
    with LiveServer(slow_llm()) as live:
        yield live


def serve(settings: Settings, retriever: Retriever, **update: Any) -> LiveServer:
    return LiveServer(create_app(settings.model_copy(update=update), retriever=retriever))


def flood(url: str, n: int, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        return [client.post("/v1/search", json=SEARCH) for _ in range(n)]


def test_rate_limit_floods_of_one_key_get_429_while_another_key_is_served(
    settings: Settings, retriever: Retriever
) -> None:
    with serve(settings, retriever, rate_limit=5.0, api_keys=SecretStr(f"{KEY_A},{KEY_B}")) as live:
        responses = flood(live.url, 100, bearer(KEY_A))
        refused = [r for r in responses if r.status_code == 429]
        assert refused and {r.status_code for r in responses} == {200, 429}
        for r in refused:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "rate_limited"
        assert httpx.post(f"{live.url}/v1/search", json=SEARCH, headers=bearer(KEY_B)).status_code == 200
        assert all(httpx.get(f"{live.url}/healthz").status_code == 200 for _ in range(30))


def test_rate_limit_without_keys_counts_per_address(settings: Settings, retriever: Retriever) -> None:
    with serve(settings, retriever, rate_limit=2.0) as live:
        statuses = [r.status_code for r in flood(live.url, 30)]
        assert statuses[:4] == [200] * 4 and 429 in statuses  # the burst (twice the rate), then refusals
        assert all(httpx.get(f"{live.url}/readyz").status_code == 200 for _ in range(20))


def test_rate_limit_zero_turns_it_off(settings: Settings, retriever: Retriever) -> None:
    with serve(settings, retriever, rate_limit=0.0) as live:
        assert {r.status_code for r in flood(live.url, 60)} == {200}


def models(url: str, n: int, headers: dict[str, str] | None = None) -> set[int]:
    """The statuses of `n` cheap requests sent back to back (a search would let tokens refill)."""
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        return {client.get("/v1/models").status_code for _ in range(n)}


@pytest.mark.parametrize(
    ("update", "rate"),
    [
        ({}, 0.0),  # make serve: loopback, no keys
        ({"api_keys": SecretStr(KEY_A)}, DEFAULT_RATE),
        ({"host": "0.0.0.0"}, DEFAULT_RATE),
        ({"host": "::1"}, 0.0),
        ({"rate_limit": 3.0}, 3.0),  # the operator's choice applies everywhere
        ({"rate_limit": 0.0, "api_keys": SecretStr(KEY_A)}, 0.0),
    ],
)
def test_rate_limit_unset_applies_where_callers_share_the_server(
    settings: Settings, update: dict[str, Any], rate: float
) -> None:
    chosen = settings.model_copy(update={"rate_limit": None, **update})
    assert applied_rate(chosen, keyed=bool(KeyRing.from_settings(chosen))) == rate


def test_rate_limit_unset_is_off_on_loopback_without_keys_and_on_per_key_with_them(
    settings: Settings, retriever: Retriever
) -> None:
    with serve(settings, retriever, rate_limit=None) as live:
        assert models(live.url, 100) == {200}
    with serve(settings, retriever, rate_limit=None, api_keys=SecretStr(KEY_A)) as live:
        assert models(live.url, 100, bearer(KEY_A)) == {200, 429}
    with serve(settings, retriever, rate_limit=None, host="0.0.0.0") as live:  # as a public bind would
        assert models(live.url, 100) == {200, 429}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_keeps_a_bounded_number_of_clients() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=1, max_clients=3, clock=clock)
    for client in "abcd":
        buckets.take(client)
    assert buckets.take("a") == 0.0  # dropped as least recently seen: back with a full bucket
    assert buckets.take("d") > 0


RATE, BURST = 1.0, 2.0  # RAG_RATE_LIMIT=1: one request a second, bursts of two
Lines = list[dict[str, Any]]


class Limited(NamedTuple):
    url: str
    workers: int
    requests: Callable[[], Lines]  # the request log lines so far


@pytest.fixture(scope="module", params=["one process", "two workers"])
def limited(request: pytest.FixtureRequest, settings: Settings, retriever: Retriever) -> Iterator[Limited]:
    """A server allowing each client RATE requests a second: the app in a thread under rag serve's
    uvicorn config, or `rag serve --workers 2`."""
    if request.param == "two workers":
        with RagServe(cli_env(settings), workers=2, RAG_RATE_LIMIT=f"{RATE:g}") as served:
            yield Limited(served.url, 2, served.requests)
        return
    one = settings.model_copy(update={"rate_limit": RATE})
    with LiveServer(create_app(one, retriever=retriever), one) as live, logged_requests() as lines:
        yield Limited(live.url, 1, lambda: list(lines))


def searches(
    limited: Limited, headers: list[dict[str, str]]
) -> tuple[list[int], float, list[dict[str, Any]]]:
    """One search per entry of `headers`, each on a connection of its own, 8 at a time (so every
    worker takes some): the statuses, the seconds they took in all, and their log lines."""

    def search(sent: dict[str, str]) -> int:
        return httpx.post(f"{limited.url}/v1/search", json=SEARCH, headers=sent, timeout=60).status_code

    time.sleep(BURST / RATE)  # whatever came before, the bucket is full again
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(search, headers))
    took = time.monotonic() - started
    ids = {sent["X-Request-ID"] for sent in headers}
    deadline = time.monotonic() + 20  # each line is written just after its response
    while len(lines := [r for r in limited.requests() if r["request_id"] in ids]) < len(ids):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return statuses, took, lines


def tagged(n: int, **more: str) -> list[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    return [{"X-Request-ID": f"{tag}-{i}", **{k: v.format(i=i) for k, v in more.items()}} for i in range(n)]


def test_rate_limit_is_the_servers_rate_whichever_worker_answers(limited: Limited) -> None:
    statuses, took, lines = searches(limited, tagged(40))
    assert set(statuses) == {200, 429}
    # A bucket holds at most BURST tokens and gains RATE a second: one bucket for the server lets
    # no more through than this (a bucket per worker would let each worker's share through).
    assert statuses.count(200) <= BURST + RATE * took
    assert len({line["pid"] for line in lines}) == limited.workers


def test_forty_searches_with_spoofed_forwarded_for_are_limited_as_one_client(limited: Limited) -> None:
    statuses, took, lines = searches(limited, tagged(40, **{"X-Forwarded-For": "203.0.113.{i}"}))
    assert set(statuses) == {200, 429}
    assert statuses.count(200) <= BURST + RATE * took
    assert {line["client"] for line in lines} == {"127.0.0.1"}  # the peer, never the header


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    settings: Settings, retriever: Retriever
) -> None:
    behind = settings.model_copy(update={"rate_limit": RATE, "trusted_proxies": "127.0.0.0/8"})
    with LiveServer(create_app(behind, retriever=retriever), behind) as live, logged_requests() as lines:
        headers = tagged(20, **{"X-Forwarded-For": "203.0.113.{i}, 127.0.0.1"})  # client, then a proxy
        statuses, _, logged = searches(Limited(live.url, 1, lambda: list(lines)), headers)
    assert statuses == [200] * 20  # twenty clients, a bucket each
    assert sorted(line["client"] for line in logged) == sorted(f"203.0.113.{i}" for i in range(20))


def _ask(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/ask", json={"question": QUESTION}, timeout=60)


def test_concurrency_limit_refuses_asks_beyond_the_slots_with_503_and_serves_searches(
    settings: Settings, retriever: Retriever, llm: LiveServer
) -> None:
    with serve(
        settings,
        retriever,
        backend="openai",
        openai_base_url=f"{llm.url}/v1",
        llm_retries=0,
        max_concurrent_asks=2,
        queue_timeout=0.5,
        rate_limit=0.0,
    ) as live:
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            asks = [pool.submit(_ask, live.url) for _ in range(5)]
            search = httpx.post(f"{live.url}/v1/search", json=SEARCH, timeout=60)
            responses = [a.result() for a in asks]
        assert search.status_code == 200  # not an expensive request: never queued
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 503, 503, 503]
        for r in responses:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "overloaded"
                assert int(r.headers["Retry-After"]) >= 1
        metrics = httpx.get(f"{live.url}/metrics").text
        assert "rag_expensive_slots 2.0" in metrics and "rag_expensive_in_flight 0.0" in metrics


def test_request_deadline_answers_504_in_the_json_shape(
    settings: Settings, retriever: Retriever, llm: LiveServer
) -> None:
    with serve(
        settings,
        retriever,
        backend="openai",
        openai_base_url=f"{llm.url}/v1",
        llm_retries=0,
        request_timeout=1.0,
    ) as live:
        r = _ask(live.url)
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "deadline_exceeded"
        assert "RAG_REQUEST_TIMEOUT" in r.json()["error"]["message"]
        assert r.elapsed.total_seconds() < LLM_SECONDS  # the client is not held for the whole call
        assert httpx.post(f"{live.url}/v1/search", json=SEARCH).status_code == 200
