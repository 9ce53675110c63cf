"""Questions about the archive itself, answered from its metadata rather than from the posts' text.

Three general forms are recognised: when a post was published ("When was End of an Era
published?"), how many comments it has ("How many comments does it have?") and which post
discusses something ("Which post discusses pay progression?"). The first two must name a post,
found by its title in the question (folded, fuzzy: every content word of the title present, in a
short span, small misspellings allowed), or, for a follow-up that says "it" or "that post", in the
latest earlier turn that names one. Nothing here is a list of questions: a question is an archive
question only when it has one of these forms and, for the first two, names a real title.

`archive_question` recognises them; `published`, `comment_count` and `discussed_in` write the
answer sentences. Each sentence opens with the post's title in quotes, and the passage it cites is
a passage of that post, so its citation carries the title and date the sentence states.

Not here: choosing the passages (rag/answer/answering.py), quoting sentences
(rag/backends/extractive.py).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rag.text import ANSWER_STOPWORDS, fold

ArchiveKind = Literal["published", "comments", "which_post"]

_PUBLISHED = re.compile(
    r"\b(?:when|what date|which date|what day|which day|what year|which year)\b[^?]*?"
    r"\b(?:published|posted|written|put up|put online|go up|went up|come out|came out|appear(?:ed)?)\b",
    re.IGNORECASE,
)
_COMMENTS = re.compile(
    r"\bhow many (?:\w+ )?(?:comments|replies|responses)\b|\bnumber of (?:comments|replies)\b", re.IGNORECASE
)
_WHICH_POST = re.compile(
    r"\b(?:in )?(?:which|what) (?:blog )?(?:posts?|articles?|entry|entries)\b"
    r"(?: (?:of|in) the (?:archive|blog))?",
    re.IGNORECASE,
)
# The verb that follows "which post" ("discusses", "is about", "talks about"): not the topic.
_DISCUSS = re.compile(
    r"^\W*(?:(?:does|do|did|is|are|was|were|has|have)\s+)?(?:\w+ly\s+)?"
    r"(?:discuss\w*|mention\w*|cover\w*|deal\w* with|talk\w* about|writ\w* about|say\w* about|"
    r"(?:is|are|was|were) about|address\w*|refer\w* to|feature\w*)\s*",
    re.IGNORECASE,
)
# A follow-up that points back at the post of an earlier turn.
_BACK_REFERENCE = re.compile(r"\b(?:it|its|this|that|the (?:same )?(?:post|article|entry))\b", re.IGNORECASE)
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
SPAN_SLACK = 3  # a title's content words may be spread over this many extra words of the question
SPELLING = 0.85  # how alike two words of five letters or more must be to count as the same


@dataclass(frozen=True)
class ArchiveQuestion:
    """A question about the archive: its kind, the post it names (none for "which post") and,
    for "which post", what the post should discuss."""

    kind: ArchiveKind
    document_id: str | None = None
    topic: str = ""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(fold(text))


def _same_word(a: str, b: str) -> bool:
    return a == b or (min(len(a), len(b)) >= 5 and difflib.SequenceMatcher(None, a, b).ratio() >= SPELLING)


def _names_title(question: Sequence[str], title: Sequence[str]) -> bool:
    """True when the question's tokens hold the title: every content word of it, in a span not much
    longer than the title, or, for a title of fewer than two content words, the whole title as is."""
    content = [w for w in title if w not in ANSWER_STOPWORDS]
    if len(content) < 2:
        n = len(title)
        return n > 0 and any(list(question[i : i + n]) == list(title) for i in range(len(question) - n + 1))
    for start, word in enumerate(question):
        if not _same_word(word, content[0]):
            continue
        window = question[start : start + len(title) + SPAN_SLACK]
        at = 0
        for token in window:
            if at < len(content) and _same_word(token, content[at]):
                at += 1
        if at == len(content):
            return True
    return False


def find_post(text: str, titles: Mapping[str, str]) -> str | None:
    """The id of the post whose title `text` names (the longest such title), or None."""
    question = _tokens(text)
    found = [
        (len(_tokens(title)), doc_id)
        for doc_id, title in titles.items()
        if _names_title(question, _tokens(title))
    ]
    return max(found)[1] if found else None


def archive_question(
    question: str, titles: Mapping[str, str], history: Sequence[str] = ()
) -> ArchiveQuestion | None:
    """`question` as a question about the archive, or None when it is not one (see module docstring).

    Args:
        question: the user's question, as asked.
        titles: every post's title, by post id.
        history: earlier user turns, oldest first; a follow-up's "it" is the post the latest names.
    """
    which = _WHICH_POST.search(question)
    if which:
        # "which post discusses X" or "in which post is X discussed"; not "what post did he hold"
        verb = _DISCUSS.match(question[which.end() :])
        if verb or which.group(0).lower().startswith("in "):
            rest = question[which.end() + (verb.end() if verb else 0) :]
            topic = f"{question[: which.start()]} {rest}".strip(" ?.!,")
            return ArchiveQuestion("which_post", topic=topic) if topic else None
    kind: ArchiveKind
    if _PUBLISHED.search(question):
        kind = "published"
    elif _COMMENTS.search(question):
        kind = "comments"
    else:
        return None
    post = find_post(question, titles)
    if post is None and _BACK_REFERENCE.search(question):
        for turn in reversed(history):
            post = find_post(turn, titles)
            if post is not None:
                break
    return ArchiveQuestion(kind, document_id=post) if post is not None else None


def _long_date(iso: str) -> str:
    day = dt.date.fromisoformat(iso)
    return f"{day.day} {day:%B %Y}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def quoted_title(title: str) -> str:
    return f"“{title}”"


def published(title: str, date: str | None) -> str:
    """The sentence saying when a post was published."""
    if not date:
        return f"{quoted_title(title)} carries no date in the archive."
    return f"{quoted_title(title)} was published on {_long_date(date)}."


def comment_count(title: str, comments: int, replies: int) -> str:
    """The sentence saying how many comments and replies a post has."""
    counted = f"{_count(comments, 'comment', 'comments')} and {_count(replies, 'reply', 'replies')}"
    return f"{quoted_title(title)} has {counted} to them."


def discussed_in(title: str, date: str | None, sentence: str) -> str:
    """The sentence pointing at a post that discusses something, with the sentence that does."""
    when = f" ({_long_date(date)})" if date else ""
    return f"{quoted_title(title)}{when}: {sentence}"
