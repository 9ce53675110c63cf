"""Cited answers: POST /v1/ask, as one JSON object or as server-sent events.

Streaming contract (the chat page relies on it): media type ``text/event-stream``; zero or more
``event: delta`` with ``data: {"text": "..."}``, then exactly one ``event: done`` whose data is
the same JSON object the non-streamed call returns. Everything that can be refused (unknown
backend 400, bad options or filters 422, index not ready 503) is refused before the stream
starts; once it has started it always ends with ``done``, carrying a fallback answer and a
warning if the backend failed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse
from starlette.concurrency import iterate_in_threadpool

from api.checks import check_history, check_query
from api.deps import RegistryDep, RetrieverDep, SettingsDep
from api.models import AskRequest, AskResponse
from rag.answer.answering import Answer, Answerer, final_answer
from rag.search.retrieval import Filters

router = APIRouter(prefix="/v1", tags=["ask"])


async def sse_events(items: Iterator[str | Answer]) -> AsyncIterator[dict[str, str]]:
    """`delta` events for text pieces, then one `done` event with the full response."""
    async for item in iterate_in_threadpool(items):
        if isinstance(item, Answer):
            yield {"event": "done", "data": AskResponse.of(item).model_dump_json()}
        elif item:
            yield {"event": "delta", "data": json.dumps({"text": item})}


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, retriever: RetrieverDep, settings: SettingsDep, registry: RegistryDep) -> Any:
    """A cited answer to a question from the archive; `"stream": true` for server-sent events."""
    check_query(body.question, settings.max_query_chars, "question")
    check_history(body.history)
    filters: Filters | None = body.filters.to_filters() if body.filters else None
    answerer = Answerer.for_backend(body.backend, settings, retriever, body.options, registry)
    items = answerer.stream(body.question, body.k, filters, body.history)
    if body.stream:
        return EventSourceResponse(sse_events(items), ping=600)
    return AskResponse.of(final_answer(items))
