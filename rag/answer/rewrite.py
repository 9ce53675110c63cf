"""Follow-up questions made standalone, so retrieval sees what "that" refers to.

A deliberately simple rule, with no model: when there are earlier user turns and the question is
short or leans on them (a pronoun like "that", "it", "they", or "what about ..."), the content
words of the latest earlier turn that the question lacks are added in front, e.g.
"what did commenters say about that?" after "What did Gauke say about short prison sentences?"
becomes "Gauke short prison sentences: what did commenters say about that?". A question that
stands alone is returned unchanged. The rewrite is shown to the user (the API returns it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.text import FOLLOW_UP_STOPWORDS, QUERY_WORD

_ANAPHORA = re.compile(
    r"\b(that|this|these|those|it|its|they|them|their|he|she|him|his|her|there|then|such|"
    r"above|same|what about|how about|and|also|else|more)\b",
    re.IGNORECASE,
)
SHORT = 8  # a question with fewer content words than this may lean on the conversation
BORROW = 12  # most words taken from an earlier turn: its gist, not a pasted article


def content_words(text: str) -> list[str]:
    """Words of `text` that carry meaning, in order, without repeats (case-insensitive)."""
    seen: set[str] = set()
    out = []
    for word in QUERY_WORD.findall(text):
        key = word.lower().strip(".'’")
        if key in FOLLOW_UP_STOPWORDS or key in seen or len(key) < 2:
            continue
        seen.add(key)
        out.append(word.strip(".'’"))
    return out


def needs_context(question: str) -> bool:
    return bool(_ANAPHORA.search(question)) or len(content_words(question)) < 3


def rewrite_query(question: str, history: Sequence[str] = ()) -> str:
    """`question` as a standalone query, borrowing key terms from the latest earlier user turn."""
    earlier = [turn for turn in history if turn.strip()]
    if not earlier or len(content_words(question)) >= SHORT or not needs_context(question):
        return question
    have = {w.lower() for w in content_words(question)}
    borrowed: list[str] = []
    for turn in reversed(earlier):  # the latest turn first; older ones only if it gave nothing
        borrowed = [w for w in content_words(turn) if w.lower() not in have][:BORROW]
        if borrowed:
            break
    if not borrowed:
        return question
    return f"{' '.join(borrowed)}: {question.strip()}"
