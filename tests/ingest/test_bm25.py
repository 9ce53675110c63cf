"""BM25 over the chunks (rag/ingest/bm25.py): the idf-weighted share of a query's terms a chunk holds."""

from __future__ import annotations

import math

import pytest

from rag.ingest.bm25 import BM25Index
from rag.ingest.chunking import chunk_document
from rag.ingest.corpus import parse_text


def _index(*comments: str) -> BM25Index:
    body = "\n\n".join(f"  {i}. {text}\n    ReplyDelete" for i, text in enumerate(comments, start=1))
    doc = parse_text(f"Friday 1 March 2019\n\nTitle\n\n{len(comments)} comments:\n\n{body}\n", "t.txt")
    return BM25Index.build(chunk_document(doc))


def test_bm25_coverage_is_the_idf_weighted_share_of_query_terms_a_chunk_holds() -> None:
    # "probation" is in all three comments, "tagging" in one: the rare term weighs more.
    index = _index("Probation tagging works.", "Probation officers.", "Probation again.")
    assert index.coverage("probation tagging", 0) == 1.0
    assert index.coverage("probation tagging", 1) == pytest.approx(
        math.log(1 + 0.5 / 3.5) / (math.log(1 + 0.5 / 3.5) + math.log(1 + 2.5 / 1.5))
    )
    assert index.coverage("tagging", 2) == 0.0


def test_bm25_coverage_counts_a_term_no_chunk_holds_as_missing() -> None:
    index = _index("Probation tagging works.", "Probation officers.")
    assert 0.0 < index.coverage("tagging zzyzx", 0) < 0.5  # the unknown term has the highest idf
    assert index.coverage("the of and", 0) == 0.0  # stopwords only: no terms


def test_bm25_coverage_of_an_empty_index_is_zero() -> None:
    assert BM25Index.build([]).coverage("probation", 0) == 0.0
