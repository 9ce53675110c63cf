"""api/serving.py: how `rag serve` runs uvicorn. Slow clients are cut off (a request head that
stalls is closed, a body that stalls gets 408), and SIGTERM lets work in flight finish: answer
streams end with their `done` event, plain requests with their 200, and new connections are refused.

The header and body tests run the app in a thread under `server_config`; the shutdown test runs a
real `rag serve` process, with a stand-in LLM on loopback that streams slowly (tests/standin.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from api.main import create_app
from api.serving import server_config
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer, free_port
from tests.standin import StandIn

POST = "POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
QUESTION = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"


@pytest.fixture(scope="module")
def bounded(settings: Settings, retriever: Retriever) -> Iterator[LiveServer]:
    """The app under rag serve's uvicorn config, with 1-second head and body timeouts."""
    served = settings.model_copy(update={"header_timeout": 1.0, "body_timeout": 1.0})
    app = create_app(served, retriever=retriever)
    live = LiveServer(app)
    config = server_config(app, served, host="127.0.0.1", port=live.port, log_level="warning")
    live.server = uvicorn.Server(config)
    live.thread = threading.Thread(target=live.server.run, daemon=True)
    with live:
        yield live


def connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.settimeout(10)
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
def test_connection_stalling_before_its_request_head_ends_is_closed(bounded: LiveServer, sent: bytes) -> None:
    with connect(bounded) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert read_all(sock) == b""  # closed without a response
        assert time.monotonic() - started < 5


def test_kept_alive_connection_stalling_in_its_next_head_is_closed(bounded: LiveServer) -> None:
    with connect(bounded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /readyz HTTP/1.1\r\nho")
        started = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - started < 5


def test_body_that_stalls_gets_408_in_the_error_shape(bounded: LiveServer) -> None:
    with connect(bounded) as sock:
        sock.sendall(f"{POST}content-length: 100\r\n\r\n".encode() + b'{"query": ')
        started = time.monotonic()
        response = read_response(sock)
        assert time.monotonic() - started < 5
    assert response.startswith(b"HTTP/1.1 408")
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "timeout" and "RAG_BODY_TIMEOUT" in body["error"]["message"]


def test_slow_but_steady_request_outlasting_the_head_timeout_is_served(bounded: LiveServer) -> None:
    payload = json.dumps({"query": "pay progression", "k": 2}).encode()
    with connect(bounded) as sock:
        sock.sendall(f"{POST}content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode())
        for n in range(0, len(payload), 8):  # ~2.5 s in all, never a 1 s stall
            time.sleep(0.5)
            sock.sendall(payload[n : n + 8])
        response = read_all(sock)
    assert response.startswith(b"HTTP/1.1 200")
    assert len(json.loads(response.split(b"\r\n\r\n", 1)[1])["results"]) == 2


@pytest.mark.parametrize(
    ("grace", "backend"),
    [("30", "openai"), ("3", "extractive")],
    ids=["answers-finish-within-grace", "answers-cut-short-fall-back"],
)
def test_rag_serve_sigterm_finishes_streams_with_done_and_requests_in_flight(
    env: dict[str, str], grace: str, backend: str
) -> None:
    # The LLM takes ~8 s to answer: within a 30 s grace the answers finish as they are; with 3 s
    # their LLM calls are cut before the grace runs out and they finish with the fallback answer.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with StandIn("slow", interval=2.0) as llm:
        environ = {
            **os.environ,
            **env,
            "RAG_OPENAI_BASE_URL": llm.url,
            "RAG_LLM_TIMEOUT": "30",
            "RAG_SHUTDOWN_GRACE": grace,
        }
        command = [sys.executable, "-c", "from rag.cli import app; app()", "serve", "--port", str(port)]
        server = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_ready(url, server)
            body = {"question": QUESTION, "backend": "openai"}
            results: dict[str, Any] = {}
            threads = [
                threading.Thread(target=stream_ask, args=(url, body, results)),
                threading.Thread(target=plain_ask, args=(url, body, results)),
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while llm.opened < 2 and time.monotonic() < deadline:  # both answers are under way
                time.sleep(0.05)
            assert llm.opened == 2
            server.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # no new connections once shutdown began
                httpx.get(f"{url}/healthz", timeout=5)
            for thread in threads:
                thread.join(timeout=60)
            # uvicorn re-raises the signal once it has shut down gracefully
            assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
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


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log = server.stderr.read().decode() if server.stderr else ""
            raise AssertionError(f"rag serve exited: {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("rag serve did not become ready")


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
