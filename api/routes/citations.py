"""Quote attribution: where in the archive a piece of text comes from."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.checks import check_query
from api.deps import RetrieverDep, SettingsDep
from api.models import Citation, CiteRequest, CiteResponse, QuoteMatch
from rag.quotes import Quoter

router = APIRouter(prefix="/v1", tags=["citations"])
_lock = threading.Lock()


def get_quoter(request: Request, retriever: RetrieverDep) -> Quoter:
    """One Quoter per app and retriever, so each document is folded once, not per request."""
    with _lock:
        quoter: Quoter | None = getattr(request.app.state, "quoter", None)
        if quoter is None or quoter.retriever is not retriever:
            quoter = Quoter(retriever)
            request.app.state.quoter = quoter
    return quoter


QuoterDep = Annotated[Quoter, Depends(get_quoter)]


@router.post("/cite", response_model=CiteResponse)
def cite(body: CiteRequest, quoter: QuoterDep, settings: SettingsDep) -> CiteResponse:
    """Where a quote occurs (exactly, earliest first), or else the passages closest to it."""
    check_query(body.text, settings.max_query_chars, field="text")
    return CiteResponse(
        matches=[
            QuoteMatch(
                exact=m.exact,
                start=m.start,
                end=m.end,
                score=m.score,
                passage_id=m.chunk.id,
                passage_ids=[c.id for c in m.chunks],
                citation=Citation.of(m.chunk),
            )
            for m in quoter.cite(body.text, body.k)
        ]
    )
