"""Passage search: the retrieval contract scripts rely on."""

from __future__ import annotations

from fastapi import APIRouter

from api.models import Citation, SearchRequest, SearchResponse, SearchResult
from api.deps import RetrieverDep, SettingsDep
from rag.errors import InvalidRequestError
from rag.retrieval import timed_search

router = APIRouter(prefix="/v1", tags=["search"])


def check_query(text: str, limit: int, field: str = "query") -> str:
    """Refuse blank and over-long queries with a message that says which and why."""
    if not text.strip():
        raise InvalidRequestError(f"{field} is empty")
    if len(text) > limit:
        raise InvalidRequestError(f"{field} is {len(text)} characters; the limit is {limit}")
    return text


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, retriever: RetrieverDep, settings: SettingsDep) -> SearchResponse:
    """The k passages most relevant to a query, each with its exact citation."""
    check_query(body.query, settings.max_query_chars)
    filters = body.filters.to_filters() if body.filters else None
    hits, took_ms = timed_search(retriever, body.query, body.k, filters)
    return SearchResponse(
        results=[
            SearchResult(id=h.chunk.id, text=h.chunk.text, score=round(h.score, 6), citation=Citation.of(h.chunk))
            for h in hits
        ],
        took_ms=round(took_ms, 3),
    )
