"""The plain-BM25 reference over 1,000-character windows (rag/eval/baseline.py)."""

from __future__ import annotations

from rag.eval.baseline import CharWindowBM25, windows
from rag.eval.retrieval import Question
from rag.ingest.corpus import load_corpus
from tests.conftest import DATA


def test_windows_cover_the_text_in_order_within_size() -> None:
    text = " ".join(f"word{i}" for i in range(600))
    parts = windows(text, 100)
    assert "".join(parts) == text
    assert all(len(p) <= 100 for p in parts)
    assert windows("", 100) == []


def test_char_window_bm25_ranks_the_window_holding_a_quote_first() -> None:
    corpus = load_corpus(DATA)
    reference = CharWindowBM25(corpus.documents)
    quote = "independent quality assurance of Serious Further Offence reviews"
    question = Question("q", "Who will quality-assure Serious Further Offence reviews?", ["x"], [quote])
    unanswerable = Question("u", "What is the capital of Peru?", [], [])
    ranks = reference.ranks([question, unanswerable])
    assert ranks == {"q": 1}
    assert all(len(t) <= 1000 for t in reference.texts)
