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
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse
from starlette.concurrency import iterate_in_threadpool

from api.checks import check_history, check_query
from api.deps import RetrieverDep, SettingsDep
from api.models import AskCitation, AskRequest, AskResponse, Citation
from rag.answering import Answer, Answerer, Prepared
from rag.backends import create_backend
from rag.prompting import ABSTAIN
from rag.retrieval import Filters, Retriever
from rag.settings import Settings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["ask"])


def make_answerer(
    settings: Settings, retriever: Retriever, backend: str | None, options: Mapping[str, Any] | None
) -> Answerer:
    """An Answerer for the named backend (UnknownBackendError -> 400, bad options -> 422)."""
    return Answerer(create_backend(backend, settings, options), retriever)


def to_response(answer: Answer) -> AskResponse:
    return AskResponse(
        answer=answer.text,
        citations=[
            AskCitation(
                n=s.n,
                id=s.chunk.id,
                text=s.chunk.text,
                score=round(s.score, 6),
                citation=Citation.of(s.chunk),
            )
            for s in answer.citations
        ],
        backend=answer.backend,
        abstained=answer.abstained,
        warnings=answer.warnings,
        took_ms=answer.took_ms,
        query=answer.query,
    )


def finish(items: Iterator[str | Answer], prepared: Prepared, backend: str) -> Iterator[str | Answer]:
    """`items`, guaranteed to end with an Answer even if something unexpected breaks mid-stream."""
    try:
        for item in items:
            yield item
            if isinstance(item, Answer):
                return
    except Exception as exc:  # noqa: BLE001 - a started stream must still end with `done`
        logger.exception("answer stream failed")
        reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = "the answer ended early"
    yield Answer(
        text=ABSTAIN,
        citations=prepared.sources[:3],
        backend=backend,
        abstained=True,
        warnings=[f"answering failed ({reason})"],
        query=prepared.query,
    )


async def sse_events(items: Iterator[str | Answer]) -> AsyncIterator[dict[str, str]]:
    """`delta` events for text pieces, then one `done` event with the full response."""
    async for item in iterate_in_threadpool(items):
        if isinstance(item, Answer):
            yield {"event": "done", "data": to_response(item).model_dump_json()}
        elif item:
            yield {"event": "delta", "data": json.dumps({"text": item})}


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, retriever: RetrieverDep, settings: SettingsDep) -> Any:
    """A cited answer to a question from the archive; `"stream": true` for server-sent events."""
    check_query(body.question, settings.max_query_chars, "question")
    check_history(body.history)
    filters: Filters | None = body.filters.to_filters() if body.filters else None
    answerer = make_answerer(settings, retriever, body.backend, body.options)
    prepared = answerer.prepare(body.question, body.k, filters, body.history)
    items = finish(answerer.generate(prepared), prepared, answerer.backend.name)
    if body.stream:
        return EventSourceResponse(sse_events(items), ping=600)
    answer = next(item for item in items if isinstance(item, Answer))
    return to_response(answer)
