"""Checks on free text from requests (queries, questions, quotes, earlier turns), shared by every
route, so the same bad input gets the same 4xx message wherever it is sent.

Pydantic checks shapes and types; these check what text must be before it reaches the model: not
blank, at least one letter or digit (zero-width or control characters alone are not a query),
valid Unicode (a JSON ``\\ud800`` escape decodes to an unpaired surrogate, which the tokenizer
cannot encode), and within `RAG_MAX_QUERY_CHARS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.errors import InvalidRequestError


def check_encodable(text: str, field: str) -> str:
    """Refuse text holding an unpaired surrogate, saying where."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = f"\\u{ord(text[exc.start]):04x}"
        raise InvalidRequestError(
            f"{field} holds an unpaired surrogate ({bad} at character {exc.start}); send valid Unicode"
        ) from exc
    return text


def check_query(text: str, limit: int, field: str = "query") -> str:
    """Refuse blank, wordless, invalid or over-long text with a message that says which and why."""
    if not text.strip():
        raise InvalidRequestError(f"{field} is empty")
    check_encodable(text, field)
    if len(text) > limit:
        raise InvalidRequestError(f"{field} is {len(text)} characters; the limit is {limit}")
    if not any(ch.isalnum() for ch in text):
        raise InvalidRequestError(f"{field} has no letters or digits")
    return text


def check_history(turns: Sequence[str], field: str = "history") -> list[str]:
    """Earlier turns only lend a follow-up a few words, so any length will do; valid Unicode it must be."""
    return [check_encodable(turn, f"{field}[{n}]") for n, turn in enumerate(turns)]
