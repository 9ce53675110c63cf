"""Parsing of the blog export: pinned seed files, the flattened layout, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import CorpusFormatError
from rag.ingest.corpus import clean_text, load_corpus, parse_file, parse_text

DATA = Path(__file__).resolve().parents[2] / "data"

# file stem: (title, date, comments, replies, first words of first comment, of last comment)
SEEDS = {
    "000_04b72ef4a6ddfc0f": (
        "If Only Probation Wasn't Broken!",
        "2019-02-22",
        9,
        11,
        "As an aside,",
        "https://www.napo.org.uk/",
    ),
    "001_94ff703d48dd3443": (
        "This from the Institute for Government:-",
        None,
        12,
        8,
        "https://www.yorkshirepost",
        "Will staff be made redundant",
    ),
    "002_c9ebe3be5a93ccd6": (
        "End of an Era",
        "2020-12-04",
        5,
        6,
        "Yet more equivocal bollocks",
        "Could be end of an",
    ),
    "003_ea05dc3451fe564a": (
        "A Probation Manifesto",
        "2020-06-06",
        7,
        6,
        "MTC can go asap.",
        "Wholeheartedly agree on the blank",
    ),
    "004_4e6f2629eaf453b2": (
        "Pick of the Week 7",
        "2016-06-19",
        12,
        7,
        "MOJ/NOMS. Read it and weep!",
        "Whatever you call it frontline",
    ),
}
DECLARED = {"000": 20, "002": 11, "003": 13, "004": 19}


@pytest.mark.parametrize("stem", sorted(SEEDS))
def test_parse_seed_file_pins_title_date_counts_and_first_words(stem: str) -> None:
    title, date, comments, replies, first, last = SEEDS[stem]
    doc = parse_file(DATA / f"{stem}.txt")
    assert (doc.title, doc.date) == (title, date)
    assert (len(doc.comments), len(doc.replies)) == (comments, replies)
    assert doc.text(doc.comments[0]).startswith(first)
    assert doc.text(doc.comments[-1]).startswith(last)
    assert doc.warnings == []


@pytest.mark.parametrize("prefix,count", sorted(DECLARED.items()))
def test_parse_declared_count_equals_comments_plus_replies(prefix: str, count: int) -> None:
    doc = parse_file(next(DATA.glob(f"{prefix}_*.txt")))
    assert doc.declared_count == count
    assert len(doc.comments) + len(doc.replies) == count


def test_parse_text_has_no_reply_delete_markers() -> None:
    for doc in load_corpus(DATA).documents:
        for node in doc.nodes[1:]:
            text = doc.text(node)
            assert "ReplyDelete" not in text
            assert not text.startswith(("Delete", "Replies"))
            assert not text.endswith(("Delete", "Replies"))


def test_parse_offsets_locate_every_node_in_the_raw_file() -> None:
    for doc in load_corpus(DATA).documents:
        for node in doc.nodes:
            raw = doc.raw[node.start : node.end]
            assert raw == raw.strip(), "offsets are trimmed"
            assert clean_text(raw) == doc.text(node)
            assert raw, f"{doc.source} {node.label()} is empty"


def test_parse_replies_are_numbered_under_their_comment() -> None:
    doc = parse_file(DATA / "000_04b72ef4a6ddfc0f.txt")
    reply = next(n for n in doc.replies if n.comment == 4)
    assert reply.reply == 1
    assert doc.text(reply).startswith("Oh yes, then you get one of the fawning NW Twitter")
    assert doc.parent(reply) == next(n for n in doc.comments if n.comment == 4)


def test_parse_flattened_file_uses_markers_for_kind() -> None:
    doc = parse_file(DATA / "001_94ff703d48dd3443.txt")
    first_reply = doc.replies[0]
    assert (first_reply.comment, first_reply.reply) == (1, 1)
    assert doc.text(first_reply).startswith("THIS newspaper is the first to welcome")
    body = doc.text(doc.body)
    assert body.startswith("This from the Institute for Government:-")
    assert "with the responsibilities of 21 companies" in body
    assert "ReplyDelete" not in body


STRUCTURED = """Monday, 1 January 2024

A Title

Body line one.
Body line two.

3 comments:

  1. First comment.
    Second line of it.

    ReplyDelete
    Replies
    1. A reply with unicode: café “quoted”.

      Delete
  2. Second comment, no replies.

    ReplyDelete
"""


def test_parse_structured_minimal_post_with_unicode() -> None:
    doc = parse_text(STRUCTURED, "x.txt")
    assert (doc.title, doc.date, doc.declared_count) == ("A Title", "2024-01-01", 3)
    assert [n.label() for n in doc.nodes] == ["post", "comment 1", "reply 1 to comment 1", "comment 2"]
    assert doc.text(doc.nodes[1]) == "First comment.\nSecond line of it."
    assert doc.text(doc.nodes[2]) == "A reply with unicode: café “quoted”."
    assert doc.text(doc.body) == "Body line one.\nBody line two."


def test_parse_numbered_list_inside_a_comment_is_not_a_new_comment() -> None:
    raw = STRUCTURED.replace("    Second line of it.", "    Second line of it.\n  5. not a comment")
    doc = parse_text(raw, "x.txt")
    assert len(doc.comments) == 2
    assert "5. not a comment" in doc.text(doc.comments[0])


def test_parse_post_without_comments() -> None:
    doc = parse_text("Friday 1 March 2019\n\nJust a post\n\nSome body.\n", "p.txt")
    assert [n.kind for n in doc.nodes] == ["post"]
    assert doc.text(doc.body) == "Some body."


def test_parse_count_mismatch_is_reported_as_warning() -> None:
    doc = parse_text(STRUCTURED.replace("3 comments:", "5 comments:"), "x.txt")
    assert doc.warnings and "x.txt:" in doc.warnings[0] and "5 comments" in doc.warnings[0]


@pytest.mark.parametrize(
    "raw,line,reason",
    [
        ("", 1, "empty"),
        ("   \n\n", 1, "empty"),
        ("Friday 1 March 2019\n", 1, "no title"),
        ("Friday 1 March 2019\n\nT\n\n2 comments:\n\nstray text\n  1. c\n", 7, "before comment 1"),
    ],
)
def test_parse_bad_file_names_file_and_line(raw: str, line: int, reason: str) -> None:
    with pytest.raises(CorpusFormatError) as info:
        parse_text(raw, "bad.txt")
    assert info.value.source == "bad.txt"
    assert info.value.line == line
    assert reason in str(info.value)
    assert str(info.value).startswith(f"bad.txt:{line}:")


def test_load_corpus_skips_bad_files_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text(STRUCTURED, encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Friday 1 March 2019\n\nT\n\ncaf\xe9\n".encode("latin-1"))
    corpus = load_corpus(tmp_path)
    assert [d.source for d in corpus.documents] == ["good.txt"]
    assert sorted(e.source for e in corpus.errors) == ["empty.txt", "latin1.txt"]
    assert any("UTF-8" in str(e) and e.line == 5 for e in corpus.errors)


def test_parse_keeps_crlf_offsets_exact() -> None:
    doc = parse_text(STRUCTURED.replace("\n", "\r\n"), "crlf.txt")
    comment = doc.comments[0]
    assert clean_text(doc.raw[comment.start : comment.end]) == "First comment.\nSecond line of it."
