"""api/serving.py: how `rag serve` runs uvicorn. Slow clients are cut off (a request head that
stalls is closed, a body that stalls gets 408), and SIGTERM lets work in flight finish: answer
streams end with their `done` event, plain requests with their 200, and new connections are refused.

Each holds for one process and for `rag serve --workers 2` alike (api/workers.py): the header and
body tests run against the app in a thread under `server_config` and against a real `rag serve
--workers 2`; the shutdown test runs a real `rag serve` with one and with two workers, and a
stand-in LLM on loopback that streams slowly (tests/standin.py). The timeouts are 2 s and a test
waits up to 20 s for what they do, so a loaded machine slows the test, never fails it.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.main import create_app
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer, RagServe
from tests.standin import StandIn

POST = "POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
QUESTION = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"


Served = LiveServer | RagServe


@pytest.fixture(scope="module", params=["one process", "two workers"])
def bounded(request: pytest.FixtureRequest, settings: Settings, retriever: Retriever) -> Iterator[Served]:
    """A server with 2-second head and body timeouts: the app in a thread under rag serve's uvicorn
    config, or `rag serve --workers 2`."""
    if request.param == "two workers":
        yield request.getfixturevalue("two_workers")
        return
    served = settings.model_copy(update={"header_timeout": 2.0, "body_timeout": 2.0})
    with LiveServer(create_app(served, retriever=retriever), served) as live:
        yield live


def connect(live: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.settimeout(20)  # ten times the timeouts: a socket still open then was never going to close
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


def read_response(sock: socket.socket) -> bytes:
    """One response with a content-length, read without waiting for the connection to close."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.parametrize("sent", [b"", b"GET /hea", b"GET /healthz HTTP/1.1\r\nhost: x\r\n"])
def test_connection_stalling_before_its_request_head_ends_is_closed(bounded: Served, sent: bytes) -> None:
    with connect(bounded) as sock:
        sock.sendall(sent)
        assert read_all(sock) == b""  # closed without a response (a timeout raises instead)


def test_twenty_stalled_half_heads_are_all_closed(bounded: Served) -> None:
    socks = [connect(bounded) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(b"GET /v1/search HTTP/1.1\r\nhost: x\r\ncontent-")
        assert [read_all(sock) for sock in socks] == [b""] * 20
        assert httpx.get(f"{bounded.url}/healthz", timeout=20).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_kept_alive_connection_stalling_in_its_next_head_is_closed(bounded: Served) -> None:
    with connect(bounded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /readyz HTTP/1.1\r\nho")
        assert read_all(sock) == b""


def test_body_that_stalls_gets_408_in_the_error_shape(bounded: Served) -> None:
    with connect(bounded) as sock:
        sock.sendall(f"{POST}content-length: 100\r\n\r\n".encode() + b'{"query": ')
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 408")
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "timeout" and "RAG_BODY_TIMEOUT" in body["error"]["message"]


def test_slow_but_steady_request_outlasting_the_timeouts_is_served(bounded: Served) -> None:
    payload = json.dumps({"query": "pay progression", "k": 2}).encode()
    with connect(bounded) as sock:
        sock.sendall(f"{POST}content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode())
        for n in range(0, len(payload), 4):  # ~5 s in all, never a 2 s stall
            time.sleep(0.5)
            sock.sendall(payload[n : n + 4])
        response = read_all(sock)
    assert response.startswith(b"HTTP/1.1 200")
    assert len(json.loads(response.split(b"\r\n\r\n", 1)[1])["results"]) == 2


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
@pytest.mark.parametrize(
    ("grace", "backend"),
    [("30", "openai"), ("3", "extractive")],
    ids=["answers-finish-within-grace", "answers-cut-short-fall-back"],
)
def test_rag_serve_sigterm_finishes_streams_with_done_and_requests_in_flight(
    env: dict[str, str], grace: str, backend: str, workers: int
) -> None:
    # The LLM takes ~8 s to answer: within a 30 s grace the answers finish as they are; with 3 s
    # their LLM calls are cut before the grace runs out and they finish with the fallback answer.
    with StandIn("slow", interval=2.0) as llm:
        slow = {"RAG_OPENAI_BASE_URL": llm.url, "RAG_LLM_TIMEOUT": "30", "RAG_SHUTDOWN_GRACE": grace}
        with RagServe(env, workers, **slow) as live:
            assert live.process is not None
            body = {"question": QUESTION, "backend": "openai"}
            results: dict[str, Any] = {}
            threads = [
                threading.Thread(target=stream_ask, args=(live.url, body, results)),
                threading.Thread(target=plain_ask, args=(live.url, body, results)),
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while llm.opened < 2 and time.monotonic() < deadline:  # both answers are under way
                time.sleep(0.05)
            assert llm.opened == 2
            live.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # no new connections once shutdown began
                httpx.get(f"{live.url}/healthz", timeout=5)
            for thread in threads:
                thread.join(timeout=60)
            # One process re-raises the signal once it has shut down gracefully; the parent of
            # workers exits 0 once they all have.
            assert live.process.wait(timeout=30) in (0, -signal.SIGTERM)
    events = results["stream"]
    assert [name for name, _ in events].count("done") == 1 and events[-1][0] == "done"
    status, plain = results["plain"]
    assert status == 200
    for answer in (events[-1][1], plain):
        assert answer["backend"] == backend and "April 2021" in answer["answer"]
        if backend == "openai":
            assert not answer["warnings"]
        else:
            assert "openai backend failed (cancelled before it finished)" in answer["warnings"][0]


def stream_ask(url: str, body: dict[str, Any], results: dict[str, Any]) -> None:
    events: list[tuple[str, Any]] = []
    with httpx.stream("POST", f"{url}/v1/ask", json={**body, "stream": True}, timeout=60) as response:
        name = "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    results["stream"] = events


def plain_ask(url: str, body: dict[str, Any], results: dict[str, Any]) -> None:
    response = httpx.post(f"{url}/v1/ask", json=body, timeout=60)
    results["plain"] = (response.status_code, response.json())
