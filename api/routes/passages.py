"""Resolve a passage id (from a search result or citation) to its text and surroundings."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IndexDep
from api.errors import documented
from api.models import PassageResponse
from rag.search.passages import resolve

router = APIRouter(prefix="/v1", tags=["passages"])


@router.get("/passages/{passage_id}", response_model=PassageResponse, responses=documented(404, 503))
def passage(passage_id: str, index: IndexDep) -> PassageResponse:
    """A passage, its citation, the text around it and, for a reply, the comment it answers."""
    return PassageResponse.of(resolve(index, passage_id))
