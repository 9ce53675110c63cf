"""Quote attribution: where in the archive does a piece of text come from?

Two stages:

1. *Exact*: the quote and each document's raw text are folded (whitespace runs become one space,
   case is folded, curly quotes become straight ones) and every occurrence of the folded quote in the
   folded document is found. Folding keeps a map from each folded character back to its raw offset,
   so an occurrence is reported as ``raw[start:end]``, even when the quote runs over line breaks and
   indentation or across two chunks. Occurrences must start and end on word boundaries (or node
   boundaries, for file 001's glued ``ReplyDelete`` markers), so "cat" never matches "concatenate".
2. *Closest*: when nothing matches exactly, the retriever's candidates are re-ranked by how much of
   the quote's wording they contain (word pairs in common), blended with the retrieval score.

Each match names one passage (the chunk that holds it, or holds most of it) for its citation and
lists every chunk it overlaps. Not here: HTTP, formatting, or the retrieval itself.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from rag.errors import InvalidRequestError
from rag.ingest.chunking import Chunk
from rag.ingest.corpus import Document
from rag.ingest.index import Index
from rag.search.retrieval import Hit, Retriever
from rag.text import QUOTE_MAP, words

MAX_EXACT = 100  # occurrences returned at most; a quote as common as "the" is not a quote
POOL = 30  # retrieval candidates re-ranked when there is no exact occurrence
COVERAGE_WEIGHT = 0.7  # share of the closest-passage score given to wording in common


@dataclass(frozen=True)
class Folded:
    """Folded text and, for each of its characters, the offset of the raw character it came from."""

    text: str
    origin: list[int]

    def raw_span(self, start: int, end: int) -> tuple[int, int]:
        """The raw [start, end) that folded [start, end) came from."""
        return self.origin[start], self.origin[end - 1] + 1


def fold(raw: str) -> Folded:
    """Fold whitespace runs to one space, case, and curly quotes; trim the ends."""
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(raw):
        if ch.isspace():
            if chars and chars[-1] != " ":
                chars.append(" ")
                origin.append(i)
            continue
        for c in ch.translate(QUOTE_MAP).casefold():
            chars.append(c)
            origin.append(i)
    if chars and chars[-1] == " ":
        chars.pop()
        origin.pop()
    return Folded("".join(chars), origin)


def fold_text(text: str) -> str:
    return fold(text).text


@dataclass(frozen=True)
class Match:
    """Where a quote comes from: `document.raw[start:end]` is the quote (exact) or the passage."""

    exact: bool
    start: int
    end: int
    score: float
    chunk: Chunk  # the passage cited
    chunks: tuple[Chunk, ...]  # every passage the match overlaps, in file order


class _FoldedDocument:
    """One document folded once, with its chunks ordered by start for span lookups."""

    def __init__(self, doc: Document, chunks: list[Chunk]) -> None:
        self.doc = doc
        self.folded = fold(doc.raw)
        self.chunks = sorted(chunks, key=lambda c: (c.start, c.end))
        self._starts = [c.start for c in self.chunks]
        self.node_starts = {n.start for n in doc.nodes}
        self.node_ends = {n.end for n in doc.nodes}

    def occurrences(self, quote: str) -> list[tuple[int, int]]:
        """Raw spans of every occurrence of the folded `quote`, in file order."""
        text = self.folded.text
        spans: list[tuple[int, int]] = []
        pos = text.find(quote)
        while pos != -1:
            end = pos + len(quote)
            raw_start, raw_end = self.folded.raw_span(pos, end)
            if self._bounded(text, quote, pos, end, raw_start, raw_end):
                spans.append((raw_start, raw_end))
            pos = text.find(quote, pos + 1)
        return spans

    def _bounded(self, text: str, quote: str, pos: int, end: int, raw_start: int, raw_end: int) -> bool:
        starts_mid_word = quote[0].isalnum() and pos > 0 and text[pos - 1].isalnum()
        ends_mid_word = quote[-1].isalnum() and end < len(text) and text[end].isalnum()
        return (not starts_mid_word or raw_start in self.node_starts) and (
            not ends_mid_word or raw_end in self.node_ends
        )

    def covering(self, start: int, end: int) -> tuple[Chunk, tuple[Chunk, ...]]:
        """The chunk to cite for raw [start, end) and every chunk overlapping it."""
        upto = bisect_left(self._starts, end)
        overlapping = tuple(c for c in self.chunks[:upto] if c.end > start)
        if not overlapping:  # e.g. a quote from a title line, which no chunk holds: cite the nearest
            nearest = min(self.chunks, key=lambda c: min(abs(c.start - end), abs(c.end - start)))
            return nearest, (nearest,)
        whole = [c for c in overlapping if c.start <= start and c.end >= end]
        best = whole[0] if whole else max(overlapping, key=lambda c: min(c.end, end) - max(c.start, start))
        return best, overlapping


def _pairs(text: str) -> set[tuple[str, ...]]:
    found = words(text)
    if len(found) < 2:
        return {tuple(found)} if found else set()
    return set(zip(found, found[1:], strict=False))


class Quoter:
    """Attributes quotes to their place in an index (injected retriever for the closest passages)."""

    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    @property
    def index(self) -> Index:
        return self.retriever.index

    @cached_property
    def _documents(self) -> list[_FoldedDocument]:
        by_doc: dict[str, list[Chunk]] = {d: [] for d in self.index.documents}
        for chunk in self.index.chunks:
            by_doc.setdefault(chunk.document_id, []).append(chunk)
        docs = [_FoldedDocument(doc, by_doc[doc_id]) for doc_id, doc in self.index.documents.items()]
        # Earliest first: dated posts by date, then undated ones; within a post, file order.
        return sorted(
            (d for d in docs if d.chunks),
            key=lambda d: (d.doc.date is None, d.doc.date or "", d.doc.source),
        )

    def exact(self, text: str) -> list[Match]:
        """Every occurrence of `text` (folded), earliest post first, then in file order."""
        quote = fold_text(text)
        if not quote:
            raise InvalidRequestError("text is empty")
        matches: list[Match] = []
        for folded in self._documents:
            for start, end in folded.occurrences(quote):
                chunk, chunks = folded.covering(start, end)
                matches.append(Match(True, start, end, 1.0, chunk, chunks))
                if len(matches) == MAX_EXACT:
                    return matches
        return matches

    def closest(self, text: str, k: int = 5) -> list[Match]:
        """The `k` passages nearest to `text`: retrieval candidates re-ranked by shared wording.

        The score is ``0.7 * coverage + 0.3 * retrieval``, where coverage is the share of the
        quote's word pairs found in the passage and retrieval the fused search score (both 0..1).
        """
        return self._rerank(text, self.retriever.search(text, max(k, POOL)), k)

    def _rerank(self, text: str, hits: list[Hit], k: int) -> list[Match]:
        quote = fold_text(text)
        if not quote:
            raise InvalidRequestError("text is empty")
        wanted = _pairs(quote)
        scored = []
        for hit in hits:
            have = _pairs(fold_text(hit.chunk.text))
            coverage = len(wanted & have) / len(wanted) if wanted else 0.0
            score = COVERAGE_WEIGHT * coverage + (1 - COVERAGE_WEIGHT) * min(1.0, max(0.0, hit.score))
            scored.append((score, hit.chunk))
        scored.sort(key=lambda pair: -pair[0])  # stable: ties keep retrieval order
        return [Match(False, c.start, c.end, round(s, 6), c, (c,)) for s, c in scored[:k]]

    def cite(self, text: str, k: int = 5) -> list[Match]:
        """Exact occurrences when there are any, otherwise the `k` closest passages."""
        return self.exact(text) or self.closest(text, k)

    def cite_many(self, requests: Sequence[tuple[str, int]]) -> list[list[Match]]:
        """`cite` for each (text, k), in order; the quotes without an exact occurrence are searched
        together (one forward pass of the model for all of them, as in `Retriever.search_many`)."""
        found = [self.exact(text) for text, _ in requests]
        missing = [(n, *requests[n]) for n, matches in enumerate(found) if not matches]
        if missing:
            searched = self.retriever.search_many([(text, max(k, POOL), None) for _, text, k in missing])
            for (n, text, k), (hits, _) in zip(missing, searched, strict=True):
                found[n] = self._rerank(text, hits, k)
        return found
