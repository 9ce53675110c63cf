"""Quote attribution: where in the archive a piece of text comes from."""

from __future__ import annotations

from fastapi import APIRouter

from api.checks import check_query
from api.deps import QuoterDep, SettingsDep
from api.errors import documented
from api.models import CiteRequest, CiteResponse, QuoteMatch

router = APIRouter(prefix="/v1", tags=["citations"], responses=documented(400, 413, 422, 503))


@router.post("/cite", response_model=CiteResponse)
def cite(body: CiteRequest, quoter: QuoterDep, settings: SettingsDep) -> CiteResponse:
    """Where a quote occurs (exactly, earliest first), or else the passages closest to it."""
    check_query(body.text, settings.max_query_chars, field="text")
    return CiteResponse(matches=[QuoteMatch.of(m) for m in quoter.cite(body.text, body.k)])
