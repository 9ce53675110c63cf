"""Browse the archive: the list of posts, and one whole post with its comment tree."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IndexDep
from api.errors import documented
from api.models import DocumentResponse, DocumentsResponse

router = APIRouter(prefix="/v1", tags=["documents"])


@router.get("/documents", response_model=DocumentsResponse, responses=documented(503))
def documents(index: IndexDep) -> DocumentsResponse:
    """Every post: id, title, date, source file, and how many comments and replies it has."""
    return DocumentsResponse.of(index)


@router.get("/documents/{document_id}", response_model=DocumentResponse, responses=documented(404, 503))
def document(document_id: str, index: IndexDep) -> DocumentResponse:
    """A whole post: its body and comment tree, each node with its number, offsets and passages."""
    return DocumentResponse.of(index, document_id)
