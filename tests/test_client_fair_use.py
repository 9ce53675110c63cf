"""rag.client.Client under the server's fair-use limits, against real servers on 127.0.0.1: a plain
loop of lookups completes under the default settings, waits out an explicit rate limit, and raises
the typed refusal only once the client's bounds run out. Asks refused for want of a slot are sent
again; a stream that has started never is. The slow LLM behind the asks is the one allowed stand-in
(tests/api/test_limits.py); the canned servers below send what our own server never does (a
``Retry-After`` as an HTTP-date, a 429 without one, a stream that breaks off)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from rag.client import (
    Answer,
    BadRequest,
    Client,
    NotReady,
    Overloaded,
    RateLimited,
    RetryLater,
    ServerUnreachable,
)
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.api.test_limits import QUESTION, slow_llm
from tests.conftest import LiveServer, evidence_quotes
from tests.test_client import CannedServer

LOOP = 124  # quotes in the loop of issue 17's script


def serve(settings: Settings, retriever: Retriever, **update: Any) -> LiveServer:
    return LiveServer(create_app(settings.model_copy(update=update), retriever=retriever))


def answered(url: str, status: int) -> float:
    """How many requests the server has answered with `status`, from its /metrics (which counts
    against the rate limit too: a refusal is waited out)."""
    response = httpx.get(f"{url}/metrics")
    while response.status_code == 429:
        time.sleep(float(response.headers["Retry-After"]))
        response = httpx.get(f"{url}/metrics")
    text = response.raise_for_status().text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "rag_http_requests"
        for sample in family.samples
        if sample.name == "rag_http_requests_total" and sample.labels.get("status") == str(status)
    )


def test_client_plain_cite_loop_completes_against_the_default_settings(
    settings: Settings, retriever: Retriever
) -> None:
    # The defaults of `make serve`: loopback, no keys, RAG_RATE_LIMIT unset. No retries allowed,
    # so the loop completes because the server never refuses it, not because the client waited.
    with serve(settings, retriever, rate_limit=None) as live, Client(live.url, max_retries=0) as rag:
        found = [rag.cite(quote) for quote in evidence_quotes(LOOP)]
        assert len(found) == LOOP and all(found)
        assert answered(live.url, 429) == 0


def test_client_cite_loop_waits_out_a_rate_limit_then_raises_once_its_bounds_run_out(
    settings: Settings, retriever: Retriever
) -> None:
    with serve(settings, retriever, rate_limit=5.0) as live:
        with Client(live.url) as rag:  # default bounds
            found = [rag.cite(quote) for quote in evidence_quotes(LOOP)]
        assert len(found) == LOOP and all(found)
        assert answered(live.url, 429) > 0  # the server did refuse; the client waited each one out
        with Client(live.url, max_retries=0) as rag, pytest.raises(RateLimited) as caught:
            for quote in evidence_quotes(LOOP):
                rag.cite(quote)
        refused = caught.value
        assert (refused.status, refused.code) == (429, "rate_limited")
        assert refused.retry_after is not None and refused.retry_after >= 1
        assert "rate limit" in refused.message
        assert isinstance(refused, RetryLater) and not isinstance(refused, BadRequest)
        # A wait longer than max_wait is not started at all: the refusal is raised at once.
        with Client(live.url, max_wait=0.5) as rag, pytest.raises(RateLimited):
            for quote in evidence_quotes(LOOP):
                rag.cite(quote)


@pytest.fixture(scope="module")
def llm() -> Iterator[LiveServer]:
    with LiveServer(slow_llm()) as live:
        yield live


def test_client_asks_refused_for_want_of_a_slot_are_sent_again(
    settings: Settings, retriever: Retriever, llm: LiveServer
) -> None:
    one_slot = {
        "backend": "openai",
        "openai_base_url": f"{llm.url}/v1",
        "llm_retries": 0,
        "max_concurrent_asks": 1,
        "queue_timeout": 0.5,
        "rate_limit": 0.0,
    }
    with serve(settings, retriever, **one_slot) as live, concurrent.futures.ThreadPoolExecutor(1) as pool:

        def hold_the_slot() -> concurrent.futures.Future[str]:
            """An ask that holds the one slot for LLM_SECONDS (longer than the queue timeout)."""
            held = pool.submit(ask, live.url)
            for _ in range(600):
                if "rag_expensive_in_flight 1.0" in httpx.get(f"{live.url}/metrics").text:
                    return held
                time.sleep(0.05)
            raise AssertionError("the first ask never took the slot")

        with Client(live.url, max_retries=0) as impatient:
            held = hold_the_slot()
            with pytest.raises(Overloaded) as caught:
                impatient.ask(QUESTION)
            assert caught.value.code == "overloaded" and caught.value.retry_after is not None
            assert not isinstance(caught.value, NotReady)
            with pytest.raises(Overloaded):
                list(impatient.ask_stream(QUESTION))  # refused before its first byte
            held.result()

        # A plain ask goes through the same sending as a cite; the stream is the one to pin.
        with Client(live.url) as patient:
            held = hold_the_slot()
            *pieces, final = list(patient.ask_stream(QUESTION))
            assert isinstance(final, Answer) and "".join(str(p) for p in pieces) == final.answer
            assert "April 2021" in final.answer and "April 2021" in held.result()
        assert answered(live.url, 503) >= 3  # two refusals raised, and at least one waited out


def ask(url: str) -> str:
    with Client(url) as rag:
        return rag.ask(QUESTION).answer


REFUSED = {"error": {"code": "rate_limited", "message": "slow down"}}


def test_client_reads_a_retry_after_given_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    with CannedServer(429, REFUSED, {"Retry-After": later}) as canned:
        with Client(canned.url, max_wait=5) as rag, pytest.raises(RateLimited) as caught:
            rag.documents()
        assert caught.value.retry_after is not None and 25 < caught.value.retry_after <= 30
        assert canned.requests == 1  # a wait past max_wait is not begun

    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    with CannedServer(429, REFUSED, {"Retry-After": past}) as canned:
        with Client(canned.url, max_retries=2) as rag, pytest.raises(RateLimited) as caught:
            rag.documents()
        assert caught.value.retry_after == 0 and canned.requests == 3  # retried at once, twice


def test_client_without_a_retry_after_backs_off_within_its_bounds() -> None:
    with CannedServer(429, REFUSED) as canned:
        with Client(canned.url, max_wait=0.5) as rag, pytest.raises(RateLimited) as caught:
            rag.search("pay")
        assert caught.value.retry_after is None and canned.requests == 1  # the first back-off is 1 s


def test_client_never_sends_a_started_stream_again() -> None:
    delta = 'event: delta\ndata: {"text": "From April"}\n\n'  # and no `done` event: the stream breaks off
    with (
        CannedServer(200, delta, {"content-type": "text/event-stream"}) as canned,
        Client(canned.url) as rag,
    ):
        stream = rag.ask_stream(QUESTION)
        assert next(stream) == "From April"
        with pytest.raises(ServerUnreachable, match="ended without its answer"):
            next(stream)
        assert canned.requests == 1


def test_client_refuses_negative_bounds() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        Client(max_retries=-1)
    with httpx.Client() as http, pytest.raises(ValueError, match="max_wait"):
        Client(http=http, max_wait=-1)
