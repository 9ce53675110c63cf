"""Quote attribution (rag/search/quotes.py and POST /v1/cite): folding, exact offsets, repeats, fallback.

The acceptance tests run over every evidence string of the dev set against the live server; the
exact offsets are checked against an independent oracle (a regex over the raw file).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import httpx
import pytest

from rag.ingest.corpus import load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, IndexConfig, build
from rag.search.quotes import MAX_EXACT, Quoter, fold, fold_text
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import DEV

EVIDENCE = [
    (q["id"], e, q["source"])
    for q in map(json.loads, DEV.read_text(encoding="utf-8").splitlines())
    if q.get("source")
    for e in q["evidence"]
]
FILLERS = ["several", "certain", "broadly", "various", "entirely", "notably", "somewhat", "largely"]


def _raw(index: Index, source: str) -> str:
    return next(d.raw for d in index.documents.values() if d.source == source)


def _oracle(raw: str, quote: str) -> list[tuple[int, int]]:
    """Independent check: a regex over the raw file (any whitespace, any case, either quote style)."""
    parts = []
    for ch in fold_text(quote):
        if ch == " ":
            parts.append(r"\s+")
        elif ch == "'":
            parts.append("['\u2018\u2019\u201a\u201b\u2032]")
        elif ch == '"':
            parts.append('["\u201c\u201d\u201e\u201f\u2033]')
        else:
            parts.append(re.escape(ch))
    return [(m.start(), m.end()) for m in re.finditer("".join(parts), raw, flags=re.IGNORECASE)]


def perturb(text: str, rng: random.Random, changes: int = 2) -> str:
    """Change a few words: replace `changes` of them (never the same one twice) with filler words."""
    words = text.split()
    positions = rng.sample(range(len(words)), min(changes, max(1, len(words) // 4)))
    for p in positions:
        words[p] = rng.choice([f for f in FILLERS if f != words[p].lower()])
    return " ".join(words)


# ---------------------------------------------------------------- folding


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("  Hello\n    World  ", "hello world"),
        ("it\u2019s \u201cfine\u201d", 'it\'s "fine"'),
        ("STRASSE stra\u00dfe", "strasse strasse"),
        ("a\r\n\r\n\tb", "a b"),
        ("", ""),
    ],
)
def test_fold_whitespace_case_and_curly_quotes(raw: str, folded: str) -> None:
    assert fold(raw).text == folded


def test_fold_maps_every_folded_span_back_to_raw_offsets() -> None:
    raw = "  One\n      Two\u2019s   THREE\n"
    f = fold(raw)
    start = f.text.index("two's three")
    s, e = f.raw_span(start, start + len("two's three"))
    assert raw[s:e] == "Two\u2019s   THREE"


# ---------------------------------------------------------------- acceptance over the dev set


@pytest.mark.parametrize(("qid", "evidence", "source"), EVIDENCE, ids=[e[0] for e in EVIDENCE])
def test_cite_dev_evidence_is_exact_in_the_right_file(
    client: httpx.Client, index: Index, qid: str, evidence: str, source: str
) -> None:
    matches = client.post("/v1/cite", json={"text": evidence}).raise_for_status().json()["matches"]
    assert matches and all(m["exact"] for m in matches)
    right = [m for m in matches if m["citation"]["source"] == source]
    assert right, f"{qid}: no exact match in {source}"
    raw = _raw(index, source)
    for m in right:
        assert fold_text(raw[m["start"] : m["end"]]) == fold_text(evidence)
        assert (m["start"], m["end"]) in _oracle(raw, evidence)
        # the cited passage is one of the passages the quote overlaps, and holds part of it
        assert m["passage_id"] in m["passage_ids"]
        assert m["citation"]["start"] < m["end"] and m["citation"]["end"] > m["start"]


def test_cite_perturbed_dev_evidence_finds_the_right_passage_first(client: httpx.Client) -> None:
    rng = random.Random(4)
    hits, total, misses = 0, 0, []
    for qid, evidence, source in EVIDENCE:
        exact = client.post("/v1/cite", json={"text": evidence}).json()["matches"]
        origin = next(m for m in exact if m["citation"]["source"] == source)
        changed = perturb(evidence, rng)
        matches = client.post("/v1/cite", json={"text": changed}).raise_for_status().json()["matches"]
        total += 1
        assert matches and not matches[0]["exact"], f"{qid}: {changed!r} still matches exactly"
        top = matches[0]
        overlap = min(top["end"], origin["end"]) - max(top["start"], origin["start"])
        if top["citation"]["source"] == source and overlap >= (origin["end"] - origin["start"]) / 2:
            hits += 1
        else:
            misses.append((qid, changed))
    rate = hits / total
    print(f"perturbed top-1: {hits}/{total} = {rate:.3f}; misses: {misses}")
    assert rate >= 0.9, misses


# ---------------------------------------------------------------- behaviour on the real index


def test_cite_repeated_quote_returns_every_occurrence_in_file_order(
    client: httpx.Client, index: Index
) -> None:
    quote = "the failure of those reforms have led to poorer services for offenders"
    expected = [
        (d.source, span)
        for d in sorted(index.documents.values(), key=lambda d: (d.date is None, d.date or "", d.source))
        for span in _oracle(d.raw, quote)
    ]
    assert len(expected) >= 2  # the institute's summary is quoted twice in post 001
    matches = client.post("/v1/cite", json={"text": quote}).json()["matches"]
    assert [(m["citation"]["source"], (m["start"], m["end"])) for m in matches] == expected


def test_cite_is_case_whitespace_and_quote_insensitive(client: httpx.Client) -> None:
    evidence = "Cameron promised you wouldn\u2019t hear him"
    shouted = "  CAMERON   promised\n you WOULDN'T hear him "
    a = client.post("/v1/cite", json={"text": evidence}).json()["matches"]
    b = client.post("/v1/cite", json={"text": shouted}).json()["matches"]
    assert a == b and a[0]["exact"]


def test_cite_never_matches_inside_a_word(client: httpx.Client) -> None:
    matches = client.post("/v1/cite", json={"text": "robation officers over"}).json()["matches"]
    assert matches and not any(m["exact"] for m in matches)


def test_cite_without_exact_returns_k_closest_with_scores(client: httpx.Client, index: Index) -> None:
    text = "pay progression promised to probation staff never arrived in the end"
    matches = client.post("/v1/cite", json={"text": text, "k": 3}).json()["matches"]
    assert len(matches) == 3
    assert all(not m["exact"] and 0.0 <= m["score"] <= 1.0 for m in matches)
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    for m in matches:  # not exact: start/end are the passage's own span
        assert (m["start"], m["end"]) == (m["citation"]["start"], m["citation"]["end"])
        assert index.chunk(m["passage_id"]).start == m["start"]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"text": ""}, "text is empty"),
        ({"text": "   \n "}, "text is empty"),
        ({"text": "TOO_LONG"}, "characters; the limit is"),
        ({"text": "probation", "k": 0}, "k"),
        ({"text": "probation", "k": 51}, "k"),
        ({"text": "probation", "kk": 3}, "unknown field"),
        ({}, "text"),
    ],
)
def test_cite_bad_input_gets_422_with_message(
    client: httpx.Client, settings: Settings, payload: dict[str, object], needle: str
) -> None:
    if payload.get("text") == "TOO_LONG":
        payload = {"text": "x" * (settings.max_query_chars + 1)}
    response = client.post("/v1/cite", json=payload)
    assert response.status_code == 422
    assert needle in response.json()["error"]["message"]


# ---------------------------------------------------------------- small synthetic archive

POSTS = {
    "a_first.txt": "Monday 4 March 2019\n\nFirst post\n\nThe minister said that probation is not a"
    " business.\nEverything else here is filler text about\n    several other things entirely.\n\n"
    "2 comments:\n\n  1. A first comment that is long enough to be its own passage.\n\n    ReplyDelete\n"
    "  2. As the minister put it, probation is not\n    a business. Quite.\n\n    ReplyDelete\n",
    "b_second.txt": "Tuesday 5 March 2019\n\nSecond post\n\nA body with nothing quoted.\n\n1 comment:\n\n"
    "  1. He said it: \u201cProbation is NOT a business.\u201d\n\n    ReplyDelete\n",
    "c_undated.txt": "An undated post\nWhere probation is not a business, either.\n",
}


@pytest.fixture(scope="module")
def tiny(model: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Quoter:
    data: Path = tmp_path_factory.mktemp("tiny")
    for name, text in POSTS.items():
        (data / name).write_text(text, encoding="utf-8")
    # chunks of 16 tokens without overlap, so a sentence of the body spans two chunks
    index = build(load_corpus(data), Embedder.from_loaded(model), IndexConfig("bundled", 16, 0))
    return Quoter(Retriever(index, Embedder.from_loaded(model)))


def test_quoter_repeats_come_earliest_post_first_then_file_order(tiny: Quoter) -> None:
    matches = tiny.exact("probation is not a business")
    where = [(m.chunk.source, m.chunk.kind, m.chunk.comment) for m in matches]
    assert where == [
        ("a_first.txt", "post", None),
        ("a_first.txt", "comment", 2),
        ("b_second.txt", "comment", 1),
        ("c_undated.txt", "post", None),
    ]
    for m in matches:
        raw = tiny.index.documents[m.chunk.document_id].raw
        assert fold_text(raw[m.start : m.end]) == "probation is not a business"


def test_quoter_quote_spanning_two_chunks_has_exact_offsets_and_both_passages(tiny: Quoter) -> None:
    quote = "that probation is not a business. Everything else here is filler text about several"
    (match,) = tiny.exact(quote)
    raw = tiny.index.documents["a_first"].raw
    assert fold_text(raw[match.start : match.end]) == fold_text(quote)
    assert len(match.chunks) >= 2
    assert not any(c.start <= match.start and c.end >= match.end for c in match.chunks)
    assert match.chunk in match.chunks


def test_quoter_caps_exact_occurrences(tiny: Quoter) -> None:
    assert len(tiny.exact("a")) <= MAX_EXACT
