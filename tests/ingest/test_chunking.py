"""Chunking: exact offsets over the whole corpus, node boundaries, no word cut in two, size limits,
overlap, stable ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag.ingest.chunking import chunk_corpus, chunk_document, count_tokens
from rag.ingest.corpus import clean_text, load_corpus, parse_text
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index
from rag.text import sentence_spans

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


# The one place a boundary sits between two letters: file 001 is flattened, and Blogger's
# "ReplyDelete" / "Delete" markers are glued to the text of the next comment or reply
# ("...tossers.\nDeleteWill staff be made redundant"). The parser starts that node right after the
# marker (rag/ingest/corpus.py), so its first chunk and sentence start there: the marker is not
# part of any node, and this is not a word cut.
GLUED_MARKER = re.compile(r"(?:ReplyDelete|Delete)$")


def _inside_a_word(raw: str, offset: int) -> bool:
    return 0 < offset < len(raw) and raw[offset - 1].isalnum() and raw[offset].isalnum()


def test_chunk_and_sentence_boundaries_never_fall_inside_a_word_over_the_whole_corpus(index: Index) -> None:
    """A chunk that starts "auke retains the sentiment" shows a user half a name and gives BM25
    the term "auke": every chunk and sentence starts and ends between words."""
    spans = [(c.document_id, c.start, c.end) for c in index.chunks]
    spans += [(s.document_id, s.start, s.end) for s in index.sentences]
    node_starts = {(d.id, n.start) for d in index.documents.values() for n in d.nodes}
    cut, glued = [], 0
    for document_id, start, end in spans:
        raw = index.documents[document_id].raw
        for offset in (start, end):
            if not _inside_a_word(raw, offset):
                continue
            if (document_id, offset) in node_starts and GLUED_MARKER.search(raw, 0, offset):
                glued += 1
                continue
            cut.append(f"{document_id}: {raw[offset - 20 : offset]}|{raw[offset : offset + 20]}")
    assert cut == []
    assert glued > 0  # the exception is real (file 001), not a rule that never applies


def test_chunk_long_sentence_is_cut_between_words() -> None:
    """A sentence over the size is cut at spaces, even where cl100k splits a word into pieces
    (" Gauke" is " G", "au", "ke")."""
    sentence = " ".join(["Gauke retains the sentiment but calls it smart"] * 30) + "."
    doc = parse_text(f"Friday 1 March 2019\n\nT\n\n{sentence}\n", "long.txt")
    chunks = chunk_document(doc, size=25, overlap=0)
    assert len(chunks) > 5
    for chunk in chunks:
        assert count_tokens(chunk.text) <= 25
        assert not _inside_a_word(doc.raw, chunk.start) and not _inside_a_word(doc.raw, chunk.end)
    assert " ".join(c.text for c in chunks) == sentence


def test_chunk_word_longer_than_the_size_is_the_one_cut_inside_a_word() -> None:
    link = "https://example.org/" + "a1b2c3d4" * 40
    doc = parse_text(f"Friday 1 March 2019\n\nT\n\nSee {link} for more.\n", "link.txt")
    chunks = chunk_document(doc, size=16, overlap=0)
    assert all(count_tokens(c.text) <= 16 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == f"See{link}formore."


def test_chunk_packs_whole_sentences_under_the_model_guard() -> None:
    """A chunk that the embedding model could not read whole is never halved mid-sentence: windows
    are packed to fit the guard, so every chunk starts and ends at a sentence boundary."""
    body = " ".join(f"Sentence number {i} says a little more here." for i in range(40))
    doc = parse_text(f"Friday 1 March 2019\n\nT\n\n{body}\n", "guard.txt")

    def guard(embed_text: str) -> bool:  # stricter than the 200-token size
        return len(embed_text.split()) <= 40

    chunks = chunk_document(doc, size=200, overlap=0, fits=guard)
    node = doc.nodes[0]
    sentence_starts = {s for s, _ in sentence_spans(doc.raw, node.start, node.end)}
    sentence_ends = {e for _, e in sentence_spans(doc.raw, node.start, node.end)}
    assert len(chunks) > 5
    for chunk in chunks:
        assert guard(chunk.embed_text)
        assert chunk.start in sentence_starts and chunk.end in sentence_ends


def test_chunk_consecutive_chunks_overlap_unless_the_last_sentence_is_over_the_budget(index: Index) -> None:
    """The overlap is the previous chunk's trailing whole sentences worth at most RAG_CHUNK_OVERLAP
    tokens, so a chunk whose last sentence alone is longer than that repeats nothing."""
    overlap = index.manifest["chunking"]["overlap"]
    chunks = index.chunks
    apart = 0
    for a, b in zip(chunks, chunks[1:], strict=False):
        if (a.document_id, a.kind, a.comment, a.reply) != (b.document_id, b.kind, b.comment, b.reply):
            continue
        if b.start < a.end:
            continue
        apart += 1
        raw = index.documents[a.document_id].raw
        last = [s for s, e in sentence_spans(raw, a.start, a.end) if e == a.end][0]
        assert count_tokens(raw[last : a.end]) + 1 > overlap, f"{a.id} and {b.id} could share a sentence"
    assert apart < len(chunks) // 4


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
    assert all(count_tokens(c.text) <= size for c in chunks)
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
