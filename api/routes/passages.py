"""Resolve a passage id (from a search result or citation) to its text and surroundings."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IndexDep
from api.models import Citation, NodeText, PassageContext, PassageResponse
from rag.citations import NodeText as LibNodeText
from rag.citations import resolve

router = APIRouter(prefix="/v1", tags=["passages"])


def _node(node: LibNodeText) -> NodeText:
    n = node.node
    return NodeText(kind=n.kind, comment=n.comment, reply=n.reply, start=n.start, end=n.end, text=node.text)


@router.get(
    "/passages/{passage_id}", response_model=PassageResponse, responses={404: {"description": "Unknown id."}}
)
def passage(passage_id: str, index: IndexDep) -> PassageResponse:
    """A passage, its citation, the text around it and, for a reply, the comment it answers."""
    p = resolve(index, passage_id)
    return PassageResponse(
        id=p.chunk.id,
        text=p.chunk.text,
        citation=Citation.of(p.chunk),
        context=PassageContext(
            before=p.before,
            after=p.after,
            node=_node(p.node),
            parent=_node(p.parent) if p.parent else None,
        ),
    )
