"""rag/answer/archive.py: which questions are about the archive itself, and the post they name."""

from __future__ import annotations

import pytest

from rag.answer.archive import ArchiveQuestion, archive_question, comment_count, find_post, published
from rag.eval.retrieval import load_questions
from tests.conftest import QUESTION_SETS

TITLES = {
    "000": "If Only Probation Wasn't Broken!",
    "001": "This from the Institute for Government:-",
    "002": "End of an Era",
    "003": "A Probation Manifesto",
    "004": "Pick of the Week 7",
}


@pytest.mark.parametrize(
    "question,expected",
    [
        ("When was End of an Era published?", ArchiveQuestion("published", "002")),
        ("On what date was the 'Pick of the Week 7' round-up posted?", ArchiveQuestion("published", "004")),
        ("when was the probation manifesto written", ArchiveQuestion("published", "003")),  # folded
        ("How many comments does If only probation wasnt broken have?", ArchiveQuestion("comments", "000")),
        (
            "How many replies are there on the Institute for Govermnent post?",
            ArchiveQuestion("comments", "001"),
        ),
        ("Which post discusses pay progression?", ArchiveQuestion("which_post", topic="pay progression")),
        (
            "What articles talk about Serious Further Offence reviews?",
            ArchiveQuestion("which_post", topic="Serious Further Offence reviews"),
        ),
        ("When was the Telegraph story about Nottinghamshire published?", None),  # names no post
        ("When was End of an Era's inspection report due?", None),  # not asked about the post
        ("What post did Ian Mulholland reach in the Prison Service?", None),  # a job, not a blog post
        ("How many comments were there?", None),  # no post named, no earlier turn
    ],
)
def test_archive_question_needs_a_form_and_a_real_title(
    question: str, expected: ArchiveQuestion | None
) -> None:
    assert archive_question(question, TITLES) == expected


def test_archive_follow_up_takes_the_post_of_the_latest_turn_naming_one() -> None:
    history = ["When was A Probation Manifesto published?", "When was End of an Era published?", "Why?"]
    assert archive_question("How many comments does it have?", TITLES, history) == ArchiveQuestion(
        "comments", "002"
    )
    # a follow-up that does not point back names nothing
    assert archive_question("How many comments are there?", TITLES, history) is None


def test_find_post_prefers_the_longest_title_named() -> None:
    titles = {"a": "Pick of the Week", "b": "Pick of the Week 7"}
    assert find_post("When was Pick of the Week 7 published?", titles) == "b"
    assert find_post("When was Pick of the Week published?", titles) == "a"
    assert find_post("", titles) is None


def test_no_question_of_the_eval_sets_but_one_is_about_the_archive() -> None:
    """The sets ask about the posts' content; the one metadata question among them is found."""
    questions = [q for path in QUESTION_SETS for q in load_questions(path)]
    found = {q.id: archive_question(q.question, TITLES) for q in questions}
    assert {i: a for i, a in found.items() if a} == {"t082": ArchiveQuestion("published", "004")}


def test_archive_sentences_state_the_metadata() -> None:
    assert published("End of an Era", "2020-12-04") == "“End of an Era” was published on 4 December 2020."
    assert published("Untitled", None) == "“Untitled” carries no date in the archive."
    assert comment_count("End of an Era", 1, 6) == "“End of an Era” has 1 comment and 6 replies to them."
