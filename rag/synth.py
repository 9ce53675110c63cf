"""Synthetic archives in the blog's own export format, for measuring the system at sizes the real
archive does not reach.

Text comes from a seeded word-level Markov chain (order 2) trained on the post files of a source
directory (the bundled ``data/`` by default), so posts read like the blog's English without
meaning anything. Each file is the *structured* layout `rag.ingest.corpus` reads: a date line, a
title, the body, ``N comments:`` and a tree of numbered comments, each closed by ``ReplyDelete``,
with their replies after ``Replies``, each closed by ``Delete``.

The same source and the same arguments give the same bytes: every choice is drawn from one
`random.Random(seed)` in a fixed order, and the chain is built from the files in name order.
Nothing is downloaded. This module only writes files; parsing is `rag.ingest.corpus`'s job.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from rag.ingest.corpus import corpus_files

# Lines the parser reads as structure; generated text must never consist of one of them.
_MARKERS = re.compile(r"^(ReplyDelete|Delete|Replies|(\d+|No) comments?:)$")
_GLUED = re.compile(r"^(ReplyDelete|Delete|Replies)")  # file 001 glues markers to the next word
_NUMBERED = re.compile(r"^\d+\.$")  # a word like "3." opening a line could read as a list item
_SENTENCE_END = re.compile(r"[.!?][\"'”’)]*$")
_MAX_SENTENCE_WORDS = 40
_FIRST_DAY = date(2010, 1, 1)
_DAYS = 12 * 365


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: how many posts, the mean comments per post, and the seed."""

    posts: int = 100
    comments: int = 20  # mean per post; a third of comments get replies, counted among them
    seed: int = 0


class MarkovText:
    """An order-2 word chain over a corpus's words: sentences that read like the source."""

    def __init__(self, texts: list[str]) -> None:
        self._next: dict[tuple[str, str], list[str]] = {}
        self._starts: list[tuple[str, str]] = []
        for text in texts:
            words = [w for w in text.split() if not _GLUED.match(w) and not _NUMBERED.match(w)]
            at_start = True
            for a, b, c in zip(words, words[1:], words[2:], strict=False):
                if at_start:
                    self._starts.append((a, b))
                self._next.setdefault((a, b), []).append(c)
                at_start = bool(_SENTENCE_END.search(a))
        if not self._starts:
            raise ValueError("the source text is too short to learn from")

    def sentence(self, rng: random.Random) -> str:
        a, b = rng.choice(self._starts)
        words = [a, b]
        while len(words) < _MAX_SENTENCE_WORDS and not _SENTENCE_END.search(words[-1]):
            followers = self._next.get((a, b))
            if not followers:
                break
            a, b = b, rng.choice(followers)
            words.append(b)
        text = " ".join(words)
        return text if _SENTENCE_END.search(text) else text + "."

    def paragraph(self, rng: random.Random, words: int) -> str:
        """Whole sentences until about `words` words."""
        out: list[str] = []
        count = 0
        while count < words:
            sentence = self.sentence(rng)
            out.append(sentence)
            count += sentence.count(" ") + 1
        return " ".join(out)

    def title(self, rng: random.Random) -> str:
        words = self.sentence(rng).rstrip(".!?\"'”’)").split()[: rng.randint(2, 7)]
        title = " ".join(w[:1].upper() + w[1:] for w in words)
        return title if title and not _MARKERS.match(title) else "Untitled"


def _indented(paragraphs: list[str], first: str, rest: str) -> list[str]:
    """A node's paragraphs as lines: the first after its number, the others indented, blank
    lines between them (as the export prints them)."""
    lines = [first + paragraphs[0]]
    for paragraph in paragraphs[1:]:
        lines += ["", rest + paragraph]
    return lines


def _post(text: MarkovText, rng: random.Random, mean_comments: int) -> str:
    day = _FIRST_DAY + timedelta(days=rng.randrange(_DAYS))
    lines = [f"{day:%A} {day.day} {day:%B %Y}", "", text.title(rng), ""]
    for _ in range(rng.randint(2, 6)):
        lines += [text.paragraph(rng, rng.randint(40, 160)), ""]
    comments = rng.randint(0, 2 * mean_comments) if mean_comments else 0
    tree: list[str] = []
    total = 0
    for c in range(1, comments + 1):
        paragraphs = [text.paragraph(rng, rng.randint(10, 90)) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        tree += [*_indented(paragraphs, f"  {c}. ", "    "), "", "    ReplyDelete"]
        total += 1
        replies = rng.choice((0, 0, 1, 1, 2, 4)) if rng.random() < 1 / 3 else 0
        if replies:
            tree.append("    Replies")
        for r in range(1, replies + 1):
            paragraphs = [text.paragraph(rng, rng.randint(8, 60)) for _ in range(rng.choice((1, 1, 2)))]
            tree += [*_indented(paragraphs, f"    {r}. ", "      "), "", "      Delete"]
            total += 1
    if total:
        lines += [f"{total} comments:", "", *tree]
    else:
        lines.append("No comments:")
    return "\n".join(lines) + "\n"


def generate(source: Path, spec: SynthSpec) -> Iterator[tuple[str, str]]:
    """(file name, file text) for each synthetic post, in order."""
    texts = [p.read_text(encoding="utf-8") for p in corpus_files(source)]
    chain = MarkovText(texts)
    rng = random.Random(spec.seed)
    width = max(6, len(str(spec.posts)))
    for i in range(spec.posts):
        body = _post(chain, rng, spec.comments)
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
        yield f"{i:0{width}d}_{digest}.txt", body


def write_archive(source: Path, out: Path, spec: SynthSpec) -> int:
    """Write a synthetic archive into `out` (created if needed). Returns the number of files."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, body in generate(source, spec):
        (out / name).write_text(body, encoding="utf-8", newline="\n")
        count += 1
    return count


def clustered_vectors(groups: list[int], dim: int, seed: int = 0, spread: float = 0.9) -> np.ndarray:
    """(sum(groups), dim) float32 unit vectors standing in for embeddings: the rows of group g (one
    post, say) lie around a topic direction of their own, and topics themselves gather around a few
    themes, as real embeddings of one blog do (cosines between passages of one post around 0.5,
    between unrelated ones near 0.1), rather than uniform noise, on which every index looks bad."""
    rng = np.random.default_rng(seed)
    themes = rng.standard_normal((max(1, len(groups) // 50 + 1), dim)).astype(np.float32)
    theme_of = rng.integers(0, len(themes), size=len(groups))
    topics = themes[theme_of] + rng.standard_normal((len(groups), dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    out = np.repeat(topics, groups, axis=0)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= spread / np.linalg.norm(noise, axis=1, keepdims=True)
    out += noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out
