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
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from api.answer_pool import answer_stream, enlist, run_answer
from api.checks import check_history, check_query
from api.deps import AnswerLimiterDep, RegistryDep, RetrieverDep, SettingsDep, StateDep
from api.errors import documented
from api.models import AskRequest, AskResponse
from rag.answer.answering import Answer, Answerer, final_answer
from rag.search.retrieval import Filters

router = APIRouter(prefix="/v1", tags=["ask"], responses=documented(400, 413, 422, 503))


async def sse_events(items: AsyncIterator[str | Answer]) -> AsyncIterator[dict[str, str]]:
    """`delta` events for text pieces, then one `done` event with the full response."""
    async for item in items:
        if isinstance(item, Answer):
            yield {"event": "done", "data": AskResponse.of(item).model_dump_json()}
        elif item:
            yield {"event": "delta", "data": json.dumps({"text": item})}


# With `"stream": true` the 200 is an event stream instead of one JSON object; the schema describes
# one event: `delta`s carry {"text": ...}, the `done` event the AskResponse object.
EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["delta", "done"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"schema": EVENT}}}}


@router.post("/ask", response_model=AskResponse, responses=STREAMED)
async def ask(
    request: Request,
    body: AskRequest,
    state: StateDep,
    retriever: RetrieverDep,
    settings: SettingsDep,
    registry: RegistryDep,
    limiter: AnswerLimiterDep,
) -> Any:
    """A cited answer to a question from the archive; `"stream": true` for server-sent events."""
    check_query(body.question, settings.max_query_chars, "question")
    check_history(body.history)
    filters: Filters | None = body.filters.to_filters() if body.filters else None
    answerer = Answerer.for_backend(body.backend, settings, retriever, body.options, registry)
    enlist(state, request, answerer)
    # Retrieval and generation run on the answers' own threads (api/answer_pool.py).
    prepare = partial(answerer.stream, body.question, body.k, filters, body.history)
    if body.stream:
        items = await anyio.to_thread.run_sync(prepare, limiter=limiter)  # refusals come before the stream
        # On SIGTERM the stream gets the shutdown grace to end with its `done` event, not a cut.
        return EventSourceResponse(
            sse_events(answer_stream(items, answerer, limiter)),
            ping=600,
            shutdown_event=anyio.Event(),
            shutdown_grace_period=settings.shutdown_grace,
        )
    answer = await run_answer(request, answerer, lambda: final_answer(prepare()), limiter)
    return AskResponse.of(answer)
