"""api/answer_pool.py over a real uvicorn server: answers cannot starve probes, searches and
lookups, a client that goes away cancels its upstream LLM call, and an ask's LLM deadline runs
from its admission.

The LLM is a stand-in on loopback (tests/standin.py) that accepts connections and never answers.
Asks are sent from raw sockets so a test can hang up on them the way a client does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import httpx
import pytest

from api.main import create_app
from rag.answer.prompting import Prompt, Source
from rag.backends import register, unregister
from rag.backends.base import LLMBackend
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer
from tests.standin import StandIn

QUESTION = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"
ASK = {"question": QUESTION, "backend": "openai"}
CHAT = {"model": "archive/openai", "messages": [{"role": "user", "content": QUESTION}], "stream": True}


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def send_raw(url: str, path: str, body: dict[str, object]) -> socket.socket:
    """POST `body` from a raw socket and leave the response unread; the caller hangs up."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    sock.sendall(f"{head}content-length: {len(data)}\r\n\r\n".encode() + data)
    return sock


@pytest.fixture
def hanging() -> Iterator[StandIn]:
    with StandIn("hang") as llm:
        yield llm


@pytest.fixture
def api(hanging: StandIn, settings: Settings, retriever: Retriever) -> Iterator[LiveServer]:
    update = {"openai_base_url": hanging.url, "llm_timeout": 60.0, "llm_retries": 0, "ask_workers": 16}
    # Admission limits off (no rate limit, a slot for every ask): all 45 asks reach the app, as
    # they would with an operator's generous limits, and compete for threads.
    limits = {"rate_limit": 0.0, "max_concurrent_asks": 100, "queue_timeout": 60.0}
    served = settings.model_copy(update={**update, **limits})
    with LiveServer(create_app(served, retriever=retriever)) as live:
        yield live


def test_health_search_and_passages_answer_while_45_asks_hang_on_the_llm(
    api: LiveServer, hanging: StandIn
) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        passage_id = client.post("/v1/search", json={"query": "pay progression"}).json()["results"][0]["id"]
        asks = [send_raw(api.url, "/v1/ask", {**ASK, "stream": n % 2 == 0}) for n in range(45)]
        try:
            # Every answer thread is taken by an ask waiting on the LLM (the rest queue for one).
            assert wait_for(lambda: hanging.opened >= 16, 30), hanging.opened
            probes = {
                "healthz": lambda: client.get("/healthz"),
                "readyz": lambda: client.get("/readyz"),
                "search": lambda: client.post("/v1/search", json={"query": "Serious Further Offence"}),
                "passage": lambda: client.get(f"/v1/passages/{passage_id}"),
            }
            for name, probe in probes.items():
                started = time.monotonic()
                response = probe()
                took = time.monotonic() - started
                assert response.status_code == 200, name
                assert took < 5, f"{name} took {took:.1f}s behind hanging asks"
        finally:
            for sock in asks:
                sock.close()
    # Hanging up cancelled the asks: every upstream call the server made is closed.
    assert wait_for(lambda: hanging.closed == hanging.opened, 10), (hanging.opened, hanging.closed)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/ask", ASK), ("/v1/ask", {**ASK, "stream": True}), ("/v1/chat/completions", CHAT)],
    ids=["ask", "ask-stream", "chat-stream"],
)
def test_client_disconnect_cancels_the_upstream_llm_call(
    api: LiveServer, hanging: StandIn, path: str, body: dict[str, object]
) -> None:
    opened = hanging.opened
    sock = send_raw(api.url, path, body)
    assert wait_for(lambda: hanging.opened == opened + 1, 15), "the ask never reached the LLM"
    closed = hanging.closed
    sock.close()
    assert wait_for(lambda: hanging.closed == closed + 1, 5), "the upstream call outlived its client"


class HeldBackend(LLMBackend):
    """Holds its answer thread (`holding` set) until `release` is set, then answers."""

    name = "held"
    holding: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        self.holding.set()
        self.release.wait(120)
        yield "Held until released [1]."


def test_an_ask_waiting_for_a_thread_has_its_llm_deadline_counted_from_admission(
    hanging: StandIn, settings: Settings, retriever: Retriever
) -> None:
    """One answer thread, two slots: the second ask is admitted at once, then waits for the thread
    while the first holds it for longer than RAG_LLM_TIMEOUT. Its deadline has passed when it gets
    the thread, so it falls back at once, without calling the LLM: never 2 x RAG_LLM_TIMEOUT."""
    timeout = 2.0
    update = {"openai_base_url": hanging.url, "llm_timeout": timeout, "llm_retries": 0, "ask_workers": 1}
    served = settings.model_copy(update={**update, "rate_limit": 0.0, "max_concurrent_asks": 2})
    HeldBackend.holding.clear()
    HeldBackend.release.clear()
    register(HeldBackend)
    try:
        with LiveServer(create_app(served, retriever=retriever)) as live, ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                httpx.post, f"{live.url}/v1/ask", json={**ASK, "backend": "held"}, timeout=120
            )
            assert HeldBackend.holding.wait(60), "the first ask never got the answer thread"
            second = pool.submit(httpx.post, f"{live.url}/v1/ask", json=ASK, timeout=120)

            def both_admitted() -> bool:
                metrics = httpx.get(f"{live.url}/metrics").text
                return "rag_expensive_in_flight 2.0" in metrics

            assert wait_for(both_admitted, 30)
            time.sleep(timeout + 0.5)  # the second ask's deadline passes while it waits
            HeldBackend.release.set()
            held, waited = first.result(), second.result()
    finally:
        unregister(HeldBackend.name)
    assert held.status_code == 200 and held.json()["backend"] == "held"
    assert waited.status_code == 200 and waited.json()["backend"] == "extractive"
    assert any(f"timed out after {timeout:g}s" in w for w in waited.json()["warnings"]), waited.json()
    assert hanging.opened == 0, "no LLM call was started once its deadline had passed"
