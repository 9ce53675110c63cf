"""Quote attribution: where in the archive a piece of text comes from, one quote or many."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.checks import check_query
from api.deps import QuoterDep, SettingsDep
from api.errors import documented
from api.models import BatchCiteRequest, BatchCiteResponse, CiteRequest, CiteResponse, QuoteMatch

router = APIRouter(prefix="/v1", tags=["citations"], responses=documented(400, 413, 422, 503))


@router.post("/cite", response_model=CiteResponse)
def cite(body: CiteRequest, quoter: QuoterDep, settings: SettingsDep) -> CiteResponse:
    """Where a quote occurs (exactly, earliest first), or else the passages closest to it."""
    check_query(body.text, settings.max_query_chars, field="text")
    return CiteResponse(matches=[QuoteMatch.of(m) for m in quoter.cite(body.text, body.k)])


@router.post("/cite/batch", response_model=BatchCiteResponse)
def cite_batch(body: BatchCiteRequest, quoter: QuoterDep, settings: SettingsDep) -> BatchCiteResponse:
    """Many quotes in one call, answered in order; one bad quote refuses the whole batch."""
    # Also called as a plain function by the CLI over a local index (rag/cli/local.py).
    for n, request in enumerate(body.requests):
        check_query(request.text, settings.max_query_chars, field=f"requests[{n}].text")
    started = time.perf_counter()
    found = quoter.cite_many([(r.text, r.k) for r in body.requests])
    took_ms = (time.perf_counter() - started) * 1000.0
    responses = [CiteResponse(matches=[QuoteMatch.of(m) for m in matches]) for matches in found]
    return BatchCiteResponse(responses=responses, took_ms=round(took_ms, 3))
