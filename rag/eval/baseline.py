"""The reference every retrieval change must beat: BM25 alone over 1,000-character windows.

What a newcomer gets from bm25s with no fusion and no tuning: each post file's text cut into
consecutive windows of about 1,000 characters (at a space), indexed with bm25s's defaults
(English stopwords, Snowball stemming). `rag eval` reports it beside the hybrid retriever, on the
same questions and with the same hit rule, so "better than plain BM25" is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import bm25s

from rag.eval.retrieval import KS, Question, passage_hits
from rag.ingest.corpus import Document
from rag.text import BM25_STOPWORDS, new_stemmer

WINDOW = 1000


def windows(text: str, size: int = WINDOW) -> list[str]:
    """Consecutive pieces of `text` of at most `size` characters, cut at a space where one is near."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start, end)
            if space > start + size // 2:
                end = space
        out.append(text[start:end])
        start = end
    return out


class CharWindowBM25:
    """BM25 over fixed-size character windows of the raw post files."""

    def __init__(self, documents: Sequence[Document], size: int = WINDOW) -> None:
        self.texts = [w for d in documents for w in windows(d.raw, size)]
        self._stemmer = new_stemmer()
        self._bm25 = bm25s.BM25()
        tokens = bm25s.tokenize(
            self.texts, stopwords=BM25_STOPWORDS, stemmer=self._stemmer, show_progress=False
        )
        self._bm25.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[str]:
        tokens = bm25s.tokenize([query], stopwords=BM25_STOPWORDS, stemmer=self._stemmer, show_progress=False)
        ids, _ = self._bm25.retrieve(tokens, k=min(k, len(self.texts)), show_progress=False)
        return [self.texts[int(i)] for i in ids[0]]

    def ranks(self, questions: Sequence[Question]) -> dict[str, int | None]:
        """The rank of the first window holding each answerable question's evidence (None past 10)."""
        out: dict[str, int | None] = {}
        for q in questions:
            if q.answerable:
                texts = self.search(q.question, max(KS))
                out[q.id] = next((r for r, t in enumerate(texts, 1) if passage_hits(t, q.evidence)), None)
        return out
