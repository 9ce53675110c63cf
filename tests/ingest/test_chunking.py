"""Chunking: exact offsets over the whole corpus, node boundaries, size limits, stable ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.ingest.chunking import chunk_corpus, chunk_document, count_tokens
from rag.ingest.corpus import clean_text, load_corpus, parse_text
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index

DATA = Path(__file__).resolve().parents[2] / "data"


def _fold_ws(text: str) -> str:
    return " ".join(text.split())


def test_chunk_offsets_hold_exactly_the_chunk_text_for_the_whole_corpus(index: Index) -> None:
    assert len(index.chunks) > 100
    raws = {p.name: p.read_text(encoding="utf-8") for p in DATA.glob("*.txt")}
    for chunk in index.chunks:
        raw = raws[chunk.source]
        assert _fold_ws(raw[chunk.start : chunk.end]) == _fold_ws(chunk.text), chunk.id


def test_chunk_never_crosses_a_node_boundary(index: Index) -> None:
    for chunk in index.chunks:
        doc = index.documents[chunk.document_id]
        node = next(
            n for n in doc.nodes if (n.kind, n.comment, n.reply) == (chunk.kind, chunk.comment, chunk.reply)
        )
        assert node.start <= chunk.start < chunk.end <= node.end


def test_chunk_embed_text_fits_the_model_and_keeps_context_out_of_text(
    index: Index, embedder: Embedder
) -> None:
    for chunk in index.chunks:
        assert embedder.fits(chunk.embed_text), chunk.id
        assert chunk.title in chunk.context
        assert not chunk.text.startswith(chunk.context)


def test_chunk_context_never_forces_shards(index: Index) -> None:
    """Only the last chunk of a node may be short: context (a parent comment that is one long link)
    once filled the model's budget and cut replies into 109 shards of a few words each."""
    by_node: dict[tuple[object, ...], list[str]] = {}
    for c in index.chunks:
        by_node.setdefault((c.document_id, c.kind, c.comment, c.reply), []).append(c.text)
    shards = [text for texts in by_node.values() for text in texts[:-1] if count_tokens(text) < 40]
    assert shards == []
    assert all("://" not in c.context for c in index.chunks)


@pytest.mark.parametrize("size,overlap", [(32, 0), (64, 16), (160, 32), (400, 80)])
def test_chunk_size_respected_and_every_sentence_covered(size: int, overlap: int) -> None:
    docs = load_corpus(DATA).documents
    chunks = chunk_corpus(docs, size, overlap)
    assert all(count_tokens(c.text) <= size + 2 for c in chunks)  # +2: joins of cut words
    by_doc = {d.id: d for d in docs}
    for doc_id, doc in by_doc.items():
        covered = [(c.start, c.end) for c in chunks if c.document_id == doc_id]
        for node in doc.nodes:
            inside = sorted((s, e) for s, e in covered if node.start <= s < node.end)
            assert inside[0][0] == node.start and inside[-1][1] == node.end
            for (_, e1), (s2, _) in zip(inside, inside[1:], strict=False):
                assert s2 <= e1 or not doc.raw[e1:s2].strip(), "a gap between chunks drops text"


def test_chunk_overlap_repeats_trailing_sentences() -> None:
    raw = "Friday 1 March 2019\n\nT\n\n" + " ".join(f"Sentence number {i} is here." for i in range(60)) + "\n"
    doc = parse_text(raw, "o.txt")
    chunks = chunk_document(doc, size=40, overlap=12)
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end, "consecutive chunks overlap"


def test_chunk_ids_are_stable_across_runs_and_unique() -> None:
    docs = load_corpus(DATA).documents
    first = [c.id for c in chunk_corpus(docs)]
    second = [c.id for c in chunk_corpus(load_corpus(DATA).documents)]
    assert first == second
    assert len(set(first)) == len(first)


def test_chunk_empty_post_body_yields_no_empty_chunk() -> None:
    doc = parse_text(
        "Friday 1 March 2019\n\nTitle only\n\n1 comments:\n\n  1. Hi there.\n    ReplyDelete\n", "e.txt"
    )
    chunks = chunk_document(doc)
    assert [c.kind for c in chunks] == ["comment"]
    assert chunks[0].text == "Hi there."
    assert clean_text(doc.raw[chunks[0].start : chunks[0].end]) == "Hi there."


def test_chunk_invalid_sizes_are_refused() -> None:
    doc = parse_text("Friday 1 March 2019\n\nT\n\nBody.\n", "x.txt")
    with pytest.raises(ValueError):
        chunk_document(doc, size=10, overlap=10)
