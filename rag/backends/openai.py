"""The openai backend: any server speaking the OpenAI chat-completions protocol.

That covers OpenAI itself, vLLM, llama.cpp's server, Ollama (``/v1``), LM Studio and others. The
base URL, model and key come from settings (``RAG_OPENAI_BASE_URL``, ``RAG_OPENAI_MODEL``,
``RAG_OPENAI_API_KEY`` or ``OPENAI_API_KEY``); a key is sent only when one is set, since local
servers need none.

Answers stream (``"stream": true``, server-sent ``data:`` lines ending with ``[DONE]``). One
deadline of ``RAG_LLM_TIMEOUT`` seconds covers the whole call - connect, every read, the whole
stream, retries included - enforced by a timer that cuts the socket, so an upstream trickling bytes
cannot hold a call past it; `cancel` cuts it the same way when the client goes. (A server counts
the deadline from the request's admission: `LLMBackend.deadline`.) A request may pick
`options.model` only from the operator's list (``RAG_OPENAI_MODELS``) and `max_tokens` only up to
``RAG_MAX_TOKENS``: the operator's key pays for both. 429 and 5xx answers are retried up to
``RAG_LLM_RETRIES`` times with exponential backoff (honouring a short ``Retry-After``). Every
failure - timeout, refused connection, an error status, malformed output - leaves as
`BackendError` with a message saying what happened (without the server's URL or reply, which
are logged).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import httpx
from pydantic import Field

from rag.answer.prompting import Prompt, Source
from rag.backends.base import LLMBackend
from rag.errors import BackendError, InvalidRequestError, echoed
from rag.settings import Settings

logger = logging.getLogger(__name__)
BACKOFF = 0.25  # seconds before the first retry; doubles each time


class Cutter:
    """The socket of one upstream call, so another thread can cut it short: the whole-call deadline
    (a timer) or a client that went away (`OpenAIBackend.cancel`).

    httpx's timeouts bound each network operation, not their sum: an upstream trickling a byte
    every few seconds never trips a read timeout. Shutting the socket down wakes a read blocked in
    another thread at once (the read sees end-of-stream), and the upstream sees the connection close.
    """

    def __init__(self) -> None:
        self.reason: str | None = None  # "deadline" or "cancelled" once cut
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: keep each new connection's socket (the TLS one replaces the raw one)."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._sock = info["return_value"].get_extra_info("socket")
                if self.reason is not None:
                    self._shutdown()

    def cut(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with suppress(OSError):  # already closed
                self._sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def translate_errors(url: str, timeout: float, cutter: Cutter | None = None) -> Iterator[None]:
    """Map httpx's exceptions (and whatever a cut socket caused) to BackendError with a message that
    says what to check. The message reaches clients as a warning, so the URL goes to the log only."""
    try:
        yield
    except (httpx.HTTPError, BackendError) as exc:
        reason = cutter.reason if cutter else None
        if reason == "cancelled":
            raise BackendError("cancelled before it finished") from exc
        if reason == "deadline" or isinstance(exc, httpx.TimeoutException):
            logger.warning("openai backend: no complete answer from %s within %gs", url, timeout)
            raise BackendError(f"timed out after {timeout:g}s (RAG_LLM_TIMEOUT)") from exc
        if isinstance(exc, BackendError):
            raise
        if isinstance(exc, httpx.ConnectError):
            logger.warning("openai backend: could not connect to %s: %s", url, exc)
            raise BackendError(
                "could not connect to the LLM server; is it running? (RAG_OPENAI_BASE_URL)"
            ) from exc
        logger.warning("openai backend: request to %s failed: %s: %s", url, type(exc).__name__, exc)
        raise BackendError(f"the request to the LLM server failed ({type(exc).__name__})") from exc


def _malformed(what: str, sample: str = "") -> BackendError:
    if sample:  # the upstream's own text can name its hosts: log it, keep it out of the warning
        logger.warning("openai backend: malformed output (%s): %r", what, sample[:200])
    return BackendError(f"malformed output from the server: {what}")


def _content(data: Any, key: str) -> str:
    """The text of choice 0 in a response (`key="message"`) or stream chunk (`key="delta"`)."""
    try:
        choices = data["choices"]
        if not choices:
            return ""
        text = choices[0][key].get("content")
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise _malformed(f"no choices[0].{key}", str(data)) from exc
    if text is not None and not isinstance(text, str):
        raise _malformed(f"choices[0].{key}.content is {type(text).__name__}, not text")
    return text or ""


class OpenAIBackend(LLMBackend):
    """Chat completions from an OpenAI-compatible HTTP server."""

    name = "openai"
    aliases = ("openai-compatible", "vllm", "llamacpp", "llama.cpp", "ollama", "lmstudio")
    supports_streaming = True
    needs_key = False  # OpenAI needs one; local servers do not
    key_env_var = "OPENAI_API_KEY"

    class Options(LLMBackend.Options):
        model: str | None = Field(None, description="Model name; default RAG_OPENAI_MODEL.")
        temperature: float = Field(0.0, ge=0.0, le=2.0)
        max_tokens: int = Field(400, ge=1, description="Most tokens to generate; at most RAG_MAX_TOKENS.")
        stream: bool = Field(True, description="Ask the server to stream its answer.")

    options: Options

    def check_options(self) -> None:
        limit = self.settings.max_tokens
        if self.options.max_tokens > limit:
            if "max_tokens" in self.options.model_fields_set:
                raise InvalidRequestError(
                    f"options.max_tokens: {self.options.max_tokens} is over the limit of {limit} "
                    "(RAG_MAX_TOKENS)"
                )
            self.options.max_tokens = limit  # the default, under an operator's lower limit
        allowed = self.settings.allowed_openai_models
        if self.options.model is not None and self.options.model not in allowed:
            raise InvalidRequestError(
                f"options.model: {echoed(self.options.model)} is not offered; choose one of "
                f"{', '.join(allowed)} (the operator lists them in RAG_OPENAI_MODELS)"
            )

    def __init__(
        self,
        settings: Settings,
        options: Options | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(settings, options)
        self.transport = transport
        self._cancelled = threading.Event()
        self._cutter: Cutter | None = None

    def cancel(self) -> None:
        self._cancelled.set()
        if self._cutter is not None:
            self._cutter.cut("cancelled")

    @property
    def url(self) -> str:
        return self.settings.openai_base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        key = self.settings.openai_api_key
        value = key.get_secret_value() if key else os.environ.get(self.key_env_var or "", "")
        return {"Authorization": f"Bearer {value}"} if value else {}

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        body = {
            "model": self.options.model or self.settings.openai_model,
            "messages": prompt.messages,
            "temperature": self.options.temperature,
            "max_tokens": self.options.max_tokens,
            "stream": self.options.stream,
        }
        deadline = self.call_deadline()
        cutter = self._cutter = Cutter()
        if self._cancelled.is_set():
            cutter.cut("cancelled")
            raise BackendError("cancelled before it finished")
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), cutter.cut, ("deadline",))
        timer.daemon = True
        timer.start()
        try:
            yield from self._call(body, deadline, cutter)
        finally:
            timer.cancel()

    def _call(self, body: dict[str, Any], deadline: float, cutter: Cutter) -> Iterator[str]:
        with (
            translate_errors(self.url, self.settings.llm_timeout, cutter),
            httpx.Client(transport=self.transport, headers=self._headers()) as client,
        ):
            response = self._send(client, body, deadline, cutter)
            try:
                if self.options.stream:
                    yield from self._read_stream(response, deadline)
                else:
                    response.read()
                    try:
                        data = response.json()
                    except ValueError as exc:
                        raise _malformed("not JSON", response.text) from exc
                    yield _content(data, "message")
            finally:
                response.close()

    def _send(
        self, client: httpx.Client, body: dict[str, Any], deadline: float, cutter: Cutter
    ) -> httpx.Response:
        """POST with retries on 429/5xx; the open (streaming) response on success."""
        retries = self.settings.llm_retries
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.ReadTimeout("deadline passed between retries")
            trace = {"trace": cutter.trace}  # hands the connection's socket to the cutter
            request = client.build_request(
                "POST", self.url, json=body, timeout=httpx.Timeout(remaining), extensions=trace
            )
            response = client.send(request, stream=True)
            if response.status_code < 400:
                return response
            detail = response.read().decode("utf-8", "replace")[:200]
            response.close()
            status = response.status_code
            if (status == 429 or status >= 500) and attempt < retries:
                wait = BACKOFF * 2**attempt
                after = response.headers.get("retry-after", "")
                if after.replace(".", "", 1).isdigit():
                    wait = max(wait, float(after))
                if time.monotonic() + wait < deadline:
                    if self._cancelled.wait(wait):
                        raise BackendError("cancelled before it finished")
                    continue
            hint = " (check RAG_OPENAI_API_KEY)" if status in (401, 403) else ""
            tries = f" after {attempt + 1} attempts" if attempt else ""
            logger.warning("openai backend: %s answered %s: %s", self.url, status, detail)
            raise BackendError(f"the server answered {status}{tries}{hint}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_stream(self, response: httpx.Response, deadline: float) -> Iterator[str]:
        """Text deltas from an SSE stream of chat.completion.chunk objects."""
        kind = response.headers.get("content-type", "")
        if "text/event-stream" not in kind:
            # Some servers ignore "stream": a plain JSON completion is still a valid answer.
            response.read()
            try:
                yield _content(response.json(), "message")
            except ValueError as exc:
                raise _malformed(f"expected an event stream, got {kind or 'no content type'}") from exc
            return
        done = False
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the stream ran past the deadline")
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping"), event/id fields
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                data = json.loads(payload)
            except ValueError as exc:
                raise _malformed("a stream event is not JSON", payload) from exc
            if isinstance(data, dict) and "error" in data:
                logger.warning("openai backend: error mid-stream: %s", str(data["error"])[:200])
                raise BackendError("the server reported an error mid-stream (details in the server log)")
            text = _content(data, "delta")
            if text:
                yield text
            if data.get("choices") and data["choices"][0].get("finish_reason"):
                done = True  # servers that never send [DONE] still mark the last chunk
        if not done:
            raise _malformed("the stream ended without [DONE]")
