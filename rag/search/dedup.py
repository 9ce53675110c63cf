"""Find repeated passages: the corpus repeats paragraphs and comments paste whole articles.

Two chunks are near-duplicates when most of the smaller one's word 5-grams occur in the other.
Groups are closed transitively (union-find) and named by their earliest chunk, so a result list can
keep the best-ranked member of each group and drop the rest. Chunk overlap (a fifth of a chunk by
default) stays well under the threshold, so neighbouring chunks of one comment are not merged.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

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
    sizes = np.array([len(s) for s in sets], dtype=np.float64)
    # shingle -> the earlier texts holding it, ascending: text i is compared with texts before it
    # only, so it joins the postings after its own comparison. Int64 arrays, not lists, so that a
    # text's shared counts are one sort in numpy: the synthetic archives repeat 5-grams across
    # thousands of chunks, and counting those postings in Python took 1.0 s per 1,000 chunks at 10k
    # chunks and grew with the corpus (most of a 100k build).
    postings: dict[int, array[int]] = {}
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, shingles in enumerate(sets):
        earlier = [p for s in shingles if (p := postings.get(s)) is not None]
        if earlier:
            # (views are dropped before the arrays grow: an exported array cannot be resized)
            ids, counts = np.unique(
                np.concatenate([np.frombuffer(p, dtype=np.int64) for p in earlier]), return_counts=True
            )
            near = counts / np.maximum(1.0, np.minimum(float(len(shingles)), sizes[ids])) >= threshold
            for j in ids[near].tolist():
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
        for s in shingles:
            if s in postings:
                postings[s].append(i)
            else:
                postings[s] = array("q", [i])
    # Every union makes the smaller root the parent, so a group's root is its earliest text
    # whatever order the pairs are found in.
    return [None if find(i) == i else find(i) for i in range(len(texts))]
