"""A misbehaving LLM server on loopback, for the tests of deadlines, cancellation and shutdown.

`StandIn(mode)` listens on 127.0.0.1 and answers every connection the same way, over a real
socket, speaking just enough HTTP/1.1 and OpenAI streaming for the openai backend:

- ``hang``: reads the request and never answers;
- ``trickle``: sends a status line and then one header byte every `interval` seconds, forever;
- ``slow``: a valid streamed chat completion, one piece every `interval` seconds, `[DONE]` last.

`opened` and `closed` count connections; `closed_at` records when each one saw its peer close
(end-of-stream or reset), so a test can check that cancelling a request reached the upstream;
`finished` counts ``slow`` streams sent to their end, so it can tell a cut stream from a done one.
`interval` may be changed between requests.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Literal

Mode = Literal["hang", "trickle", "slow"]
PIECES = ["The inspectorate ", "will quality assure ", "reviews from April 2021 ", "[1]."]


def _chunk(text: str, finish: str | None = None) -> bytes:
    data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    data["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
    event = f"data: {json.dumps(data)}\n\n".encode()
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


class StandIn:
    """A loopback server that misbehaves in one chosen way (see the module docstring)."""

    def __init__(self, mode: Mode, interval: float = 0.5) -> None:
        self.mode, self.interval = mode, interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.opened = 0
        self.finished = 0
        self.closed_at: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def closed(self) -> int:
        return len(self.closed_at)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.opened += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._read_request(conn)
                if self.mode == "hang":
                    while conn.recv(65536):  # returns b"" when the client closes
                        pass
                elif self.mode == "trickle":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    while not self._stop.is_set():
                        conn.sendall(b"X")  # one byte of a header that never ends
                        if self._peer_closed(conn, self.interval):
                            break
                else:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    for piece in PIECES:
                        if self._peer_closed(conn, self.interval):
                            break
                        conn.sendall(_chunk(piece))
                    else:
                        conn.sendall(_chunk("", "stop") + _chunk_raw(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                        with self._lock:
                            self.finished += 1
                        while conn.recv(65536):
                            pass
            except OSError:
                pass  # reset by the peer: a close too
            with self._lock:
                self.closed_at.append(time.monotonic())

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                raise OSError("closed before the request was sent")
            data += piece
        head, body = data.split(b"\r\n\r\n", 1)
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            piece = conn.recv(65536)
            if not piece:
                raise OSError("closed mid-body")
            body += piece

    @staticmethod
    def _peer_closed(conn: socket.socket, wait: float) -> bool:
        """Wait up to `wait` seconds; True if the client closed meanwhile."""
        conn.settimeout(wait)
        try:
            return conn.recv(65536) == b""
        except TimeoutError:
            return False
        finally:
            conn.settimeout(None)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunk_raw(event: bytes) -> bytes:
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"
