"""The openai backend: any server speaking the OpenAI chat-completions protocol.

That covers OpenAI itself, vLLM, llama.cpp's server, Ollama (``/v1``), LM Studio and others. The
base URL, model and key come from settings (``RAG_OPENAI_BASE_URL``, ``RAG_OPENAI_MODEL``,
``RAG_OPENAI_API_KEY`` or ``OPENAI_API_KEY``); a key is sent only when one is set, since local
servers need none.

Answers stream (``"stream": true``, server-sent ``data:`` lines ending with ``[DONE]``). One
deadline of ``RAG_LLM_TIMEOUT`` seconds covers the whole call, retries included, so a call never
hangs past it. 429 and 5xx answers are retried up to ``RAG_LLM_RETRIES`` times with exponential
backoff (honouring a short ``Retry-After``). Every failure - timeout, refused connection, an
error status, malformed output - leaves as `BackendError` with a message saying what happened.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import Field

from rag.answer.prompting import Prompt, Source
from rag.backends.base import LLMBackend
from rag.errors import BackendError
from rag.settings import Settings

BACKOFF = 0.25  # seconds before the first retry; doubles each time


@contextmanager
def translate_errors(url: str, timeout: float) -> Iterator[None]:
    """Map httpx's exceptions to BackendError with a message that says what to check."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise BackendError(f"timed out after {timeout:g}s waiting for {url} (RAG_LLM_TIMEOUT)") from exc
    except httpx.ConnectError as exc:
        raise BackendError(
            f"could not connect to {url} ({exc}); is the server running? (RAG_OPENAI_BASE_URL)"
        ) from exc
    except httpx.HTTPError as exc:
        raise BackendError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc


def _malformed(what: str) -> BackendError:
    return BackendError(f"malformed output from the server: {what}")


def _content(data: Any, key: str) -> str:
    """The text of choice 0 in a response (`key="message"`) or stream chunk (`key="delta"`)."""
    try:
        choices = data["choices"]
        if not choices:
            return ""
        text = choices[0][key].get("content")
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise _malformed(f"no choices[0].{key} in {str(data)[:200]!r}") from exc
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
        max_tokens: int = Field(400, ge=1, le=8192)
        stream: bool = Field(True, description="Ask the server to stream its answer.")

    options: Options

    def __init__(
        self,
        settings: Settings,
        options: Options | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(settings, options)
        self.transport = transport

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
        timeout = self.settings.llm_timeout
        deadline = time.monotonic() + timeout
        with (
            translate_errors(self.url, timeout),
            httpx.Client(transport=self.transport, headers=self._headers()) as client,
        ):
            response = self._send(client, body, deadline)
            try:
                if self.options.stream:
                    yield from self._read_stream(response, deadline)
                else:
                    response.read()
                    try:
                        data = response.json()
                    except ValueError as exc:
                        raise _malformed(f"not JSON: {response.text[:200]!r}") from exc
                    yield _content(data, "message")
            finally:
                response.close()

    def _send(self, client: httpx.Client, body: dict[str, Any], deadline: float) -> httpx.Response:
        """POST with retries on 429/5xx; the open (streaming) response on success."""
        retries = self.settings.llm_retries
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.ReadTimeout("deadline passed between retries")
            request = client.build_request("POST", self.url, json=body, timeout=httpx.Timeout(remaining))
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
                    time.sleep(wait)
                    continue
            hint = " (check RAG_OPENAI_API_KEY)" if status in (401, 403) else ""
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise BackendError(f"the server answered {status}{tries}{hint}: {detail}")
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
                raise _malformed(f"a stream event is not JSON: {payload[:200]!r}") from exc
            if isinstance(data, dict) and "error" in data:
                raise BackendError(f"the server reported an error mid-stream: {str(data['error'])[:200]}")
            text = _content(data, "delta")
            if text:
                yield text
            if data.get("choices") and data["choices"][0].get("finish_reason"):
                done = True  # servers that never send [DONE] still mark the last chunk
        if not done:
            raise _malformed("the stream ended without [DONE]")
