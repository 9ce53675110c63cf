"""Passage search: the retrieval contract scripts rely on."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.checks import check_query
from api.deps import RetrieverDep, SettingsDep
from api.errors import documented
from api.models import BatchSearchRequest, BatchSearchResponse, SearchRequest, SearchResponse
from rag.search.retrieval import timed_search

router = APIRouter(prefix="/v1", tags=["search"], responses=documented(400, 413, 422, 503))


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, retriever: RetrieverDep, settings: SettingsDep) -> SearchResponse:
    """The k passages most relevant to a query, each with its exact citation."""
    check_query(body.query, settings.max_query_chars)
    filters = body.filters.to_filters() if body.filters else None
    return SearchResponse.of(*timed_search(retriever, body.query, body.k, filters))


@router.post("/search/batch", response_model=BatchSearchResponse)
def search_batch(
    body: BatchSearchRequest, retriever: RetrieverDep, settings: SettingsDep
) -> BatchSearchResponse:
    """Many searches in one call, answered in order; one bad query refuses the whole batch."""
    for n, request in enumerate(body.queries):
        check_query(request.query, settings.max_query_chars, field=f"queries[{n}].query")
    requests = [(r.query, r.k, r.filters.to_filters() if r.filters else None) for r in body.queries]
    started = time.perf_counter()
    responses = [SearchResponse.of(hits, ms) for hits, ms in retriever.search_many(requests)]
    took_ms = (time.perf_counter() - started) * 1000.0
    return BatchSearchResponse(responses=responses, took_ms=round(took_ms, 3))
