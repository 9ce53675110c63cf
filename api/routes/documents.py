"""Browse the archive: the list of posts, and one whole post with its comment tree."""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter

from api.deps import IndexDep
from api.models import (
    BodyNode,
    CommentNode,
    DocumentResponse,
    DocumentsResponse,
    DocumentSummary,
    ReplyNode,
)
from rag.corpus import Node
from rag.index import Index

router = APIRouter(prefix="/v1", tags=["documents"])


Location = tuple[str, int | None, int | None]  # (kind, comment, reply): a node's address


def _passages(index: Index, document_id: str) -> dict[Location, list[str]]:
    """Passage ids of each node of a document, in file order."""
    out: dict[Location, list[str]] = defaultdict(list)
    for chunk in index.chunks:
        if chunk.document_id == document_id:
            out[(chunk.kind, chunk.comment, chunk.reply)].append(chunk.id)
    return out


@router.get("/documents", response_model=DocumentsResponse)
def documents(index: IndexDep) -> DocumentsResponse:
    """Every post: id, title, date, source file, and how many comments and replies it has."""
    docs = sorted(index.documents.values(), key=lambda d: d.id)
    return DocumentsResponse(
        documents=[
            DocumentSummary(
                id=d.id,
                title=d.title,
                date=d.date,
                source=d.source,
                comments=len(d.comments),
                replies=len(d.replies),
            )
            for d in docs
        ]
    )


@router.get(
    "/documents/{document_id}",
    response_model=DocumentResponse,
    responses={404: {"description": "Unknown id."}},
)
def document(document_id: str, index: IndexDep) -> DocumentResponse:
    """A whole post: its body and comment tree, each node with its number, offsets and passages."""
    doc = index.document(document_id)
    ids = _passages(index, doc.id)

    def passage_ids(n: Node) -> list[str]:
        return ids.get((n.kind, n.comment, n.reply), [])

    comments = [
        CommentNode(
            number=c.comment or 0,
            start=c.start,
            end=c.end,
            text=doc.text(c),
            passage_ids=passage_ids(c),
            replies=[
                ReplyNode(
                    number=r.reply or 0,
                    start=r.start,
                    end=r.end,
                    text=doc.text(r),
                    passage_ids=passage_ids(r),
                )
                for r in doc.replies
                if r.comment == c.comment
            ],
        )
        for c in doc.comments
    ]
    body = doc.body
    return DocumentResponse(
        id=doc.id,
        title=doc.title,
        date=doc.date,
        source=doc.source,
        body=BodyNode(start=body.start, end=body.end, text=doc.text(body), passage_ids=passage_ids(body)),
        comments=comments,
    )
