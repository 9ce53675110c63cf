"""Resolve a passage id to its exact source: the node holding it, the text around it, its parent.

Everything here reads the raw file text kept in the index, so what a citation shows is what the
file says, whatever chunking did.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rag.ingest.chunking import Chunk
from rag.ingest.corpus import Document, Node, clean_text
from rag.ingest.index import Index

WINDOW = 600  # characters of context either side of a passage, within its node


@dataclass(frozen=True)
class NodeText:
    node: Node
    text: str


@dataclass(frozen=True)
class Passage:
    """A chunk resolved against its document: the passage plus its surroundings."""

    chunk: Chunk
    before: str
    after: str
    node: NodeText
    parent: NodeText | None


def _node_of(doc: Document, chunk: Chunk) -> Node:
    return next(
        n for n in doc.nodes if n.kind == chunk.kind and n.comment == chunk.comment and n.reply == chunk.reply
    )


def resolve(index: Index, chunk_id: str, window: int = WINDOW) -> Passage:
    """The passage `chunk_id` with its context. Raises NotFoundError for an unknown id."""
    chunk = index.chunk(chunk_id)
    doc = index.document(chunk.document_id)
    node = _node_of(doc, chunk)
    before = clean_text(doc.raw[max(node.start, chunk.start - window) : chunk.start])
    after = clean_text(doc.raw[chunk.end : min(node.end, chunk.end + window)])
    parent = doc.parent(node)
    return Passage(
        chunk=chunk,
        before=before,
        after=after,
        node=NodeText(node, doc.text(node)),
        parent=NodeText(parent, doc.text(parent)) if parent else None,
    )


Location = tuple[str, int | None, int | None]  # (kind, comment, reply): a node's address


def passage_ids_by_node(index: Index, document_id: str) -> dict[Location, list[str]]:
    """Passage ids of each node of a document, in file order."""
    out: dict[Location, list[str]] = defaultdict(list)
    for chunk in index.chunks:
        if chunk.document_id == document_id:
            out[(chunk.kind, chunk.comment, chunk.reply)].append(chunk.id)
    return out
