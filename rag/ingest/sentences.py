"""Sentence units for fine-grained scoring: a question often matches one sentence of a long chunk.

Each sentence keeps its span in the raw file and the chunks that contain it, so a sentence hit
lifts every chunk it belongs to. Very short fragments are merged with the next sentence: a
three-word line ("Rob Allen", a URL) carries too little meaning to embed alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rag.ingest.chunking import Chunk, node_context
from rag.ingest.corpus import Document, clean_text
from rag.text import sentence_spans

MIN_WORDS = 6


@dataclass(frozen=True)
class Sentence:
    """A sentence (or merged run of short ones) of one node, and the chunks that hold it."""

    document_id: str
    start: int
    end: int
    text: str
    context: str
    chunks: list[int]

    @property
    def embed_text(self) -> str:
        return f"{self.context}: {self.text}"


def split_sentences(documents: Sequence[Document], chunks: Sequence[Chunk]) -> list[Sentence]:
    by_doc: dict[str, list[int]] = defaultdict(list)
    for i, chunk in enumerate(chunks):
        by_doc[chunk.document_id].append(i)
    out: list[Sentence] = []
    for doc in documents:
        doc_chunks = by_doc.get(doc.id, [])
        for node in doc.nodes:
            context = node_context(doc, node)
            pending: tuple[int, int] | None = None
            spans = sentence_spans(doc.raw, node.start, node.end)
            for n, (s, e) in enumerate(spans):
                if pending is not None:
                    s = pending[0]
                if len(doc.raw[s:e].split()) < MIN_WORDS and n + 1 < len(spans):
                    pending = (s, e)
                    continue
                pending = None
                holders = [
                    i
                    for i in doc_chunks
                    if chunks[i].start <= s < chunks[i].end and node.start <= chunks[i].start <= node.end
                ]
                if holders:
                    out.append(Sentence(doc.id, s, e, clean_text(doc.raw[s:e]), context, holders))
    return out
