"""Find repeated passages: the corpus repeats paragraphs and comments paste whole articles.

Two chunks are near-duplicates when most of the smaller one's word 5-grams occur in the other.
Groups are closed transitively (union-find) and named by their earliest chunk, so a result list can
keep the best-ranked member of each group and drop the rest. Chunk overlap (a fifth of a chunk by
default) stays well under the threshold, so neighbouring chunks of one comment are not merged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rag.text import words as _words

SHINGLE = 5
THRESHOLD = 0.6


def _shingles(text: str) -> set[int]:
    words = _words(text.lower())
    if len(words) < SHINGLE:
        return {hash(" ".join(words))} if words else set()
    return {hash(" ".join(words[i : i + SHINGLE])) for i in range(len(words) - SHINGLE + 1)}


def duplicate_of(texts: Sequence[str], threshold: float = THRESHOLD) -> list[int | None]:
    """For each text, the index of the earliest text in its duplicate group, or None if it leads."""
    sets = [_shingles(t) for t in texts]
    postings: dict[int, list[int]] = defaultdict(list)
    for i, shingles in enumerate(sets):
        for s in shingles:
            postings[s].append(i)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, shingles in enumerate(sets):
        shared: dict[int, int] = defaultdict(int)
        for s in shingles:
            for j in postings[s]:
                if j < i:
                    shared[j] += 1
        for j, count in shared.items():
            if count / max(1, min(len(shingles), len(sets[j]))) >= threshold:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    return [None if find(i) == i else find(i) for i in range(len(texts))]
