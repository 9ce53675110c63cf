"""The archive as an OpenAI-compatible model: POST /v1/chat/completions and GET /v1/models.

Any client or chat UI that speaks the protocol can use the archive: the official ``openai``
Python client pointed at ``http://host:port/v1`` works unchanged. The model name picks the
backend: ``archive`` (the default backend), ``archive/<backend>``, or a backend name.

The last user message is the question; earlier user turns let a follow-up ("what did
commenters say about that?") be rewritten into a standalone query, shown as ``rewritten_query``.
Citations appear as [n] in the content and, in the plain response and in the last streamed
chunk, as a structured ``citations`` list (the /v1/ask citation objects) beside ``warnings``,
``abstained`` and ``support``. Request fields the protocol defines but we have no use for (temperature,
top_p, ...) are accepted and ignored, as a compatible server must; ``k`` and ``filters`` are
our own extras.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.answer_pool import answer_stream, enlist, run_answer
from api.checks import check_encodable, check_query
from api.deps import AnswerLimiterDep, RegistryDep, RetrieverDep, SettingsDep, StateDep
from api.errors import documented
from api.models import AskResponse, Count, SearchFilters
from rag.answer.answering import Answer, Answerer, final_answer
from rag.backends import Registry
from rag.errors import InvalidRequestError
from rag.settings import Settings

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
MODEL = "archive"
OWNER = "rag-archive"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ... are part of the protocol

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]  # the protocol's roles
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            texts = (p.get("text") for p in self.content if p.get("type") == "text")
            return " ".join(t for t in texts if isinstance(t, str))
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, stream_options, ...: ignored

    model: str = MODEL
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = Field(False, strict=True)
    k: Count = Field(5, ge=1, le=20, strict=True, description="Passages the answer may draw on (an extra).")
    filters: SearchFilters | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = OWNER


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def backend_for(model: str, settings: Settings, registry: Registry) -> str:
    """The backend a model name selects; UnknownBackendError (400) lists the choices."""
    name = model.strip()
    if name in (MODEL, ""):
        return settings.backend
    if name.startswith(f"{MODEL}/"):
        name = name[len(MODEL) + 1 :]
    return registry.get(name).name


@router.get("/models", response_model=ModelList)
def models(registry: RegistryDep) -> ModelList:
    """The archive as models: `archive` (default backend) and `archive/<backend>` for each backend."""
    names = registry.names()
    return ModelList(data=[ModelCard(id=MODEL)] + [ModelCard(id=f"{MODEL}/{n}") for n in names])


def _extras(answer: Answer) -> dict[str, Any]:
    body = AskResponse.of(answer).model_dump()
    return {
        "citations": body["citations"],
        "rewritten_query": answer.query,
        "warnings": answer.warnings,
        "abstained": answer.abstained,
        "support": body["support"],
        "backend": answer.backend,
    }


# One streamed event: `data:` holds a chat.completion.chunk object, or `[DONE]` at the end.
EVENT: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


@router.post(
    "/chat/completions",
    responses={200: {"content": {"text/event-stream": {"schema": EVENT}}}, **documented(400, 413, 422, 503)},
)
async def chat_completions(
    request: Request,
    body: ChatRequest,
    state: StateDep,
    retriever: RetrieverDep,
    settings: SettingsDep,
    registry: RegistryDep,
    limiter: AnswerLimiterDep,
) -> Any:
    """An OpenAI chat completion answering the last user message from the archive, with citations."""
    users = [m.text() for m in body.messages if m.role == "user"]
    if not users or not users[-1].strip():
        raise InvalidRequestError("messages: the last user message is the question, and there is none")
    if body.messages[-1].role != "user":
        raise InvalidRequestError("messages: the last message must be the user's question")
    question = check_query(users[-1], settings.max_query_chars, "question")
    for n, message in enumerate(body.messages):
        check_encodable(message.text(), f"messages[{n}].content")
    answerer = Answerer.for_backend(
        backend_for(body.model, settings, registry), settings, retriever, None, registry
    )
    enlist(state, request, answerer)
    filters = body.filters.to_filters() if body.filters else None
    prepare = partial(answerer.stream, question, body.k, filters, users[:-1])
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    # Retrieval and generation run on the answers' own threads (api/answer_pool.py).
    if body.stream:
        items = await anyio.to_thread.run_sync(prepare, limiter=limiter)
        chunks = answer_stream(_chunks(items, ident, created, body.model), answerer, limiter)
        return StreamingResponse(chunks, media_type="text/event-stream")
    answer = await run_answer(request, answerer, lambda: final_answer(prepare()), limiter)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        **_extras(answer),
    }


def _chunks(items: Iterator[str | Answer], ident: str, created: int, model: str) -> Iterator[str]:
    """`data:` lines of chat.completion.chunk objects; the last carries the citations; then [DONE]."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        data = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for item in items:
        if isinstance(item, Answer):
            yield chunk({}, "stop", **_extras(item))
        elif item:
            yield chunk({"content": item})
    yield "data: [DONE]\n\n"
