"""Reuse the vectors of a previous build, so `rag ingest` re-embeds only what is new or changed.

A vector depends on nothing but the model and the exact text embedded (a chunk's or a sentence's
`embed_text`: context plus text), so the previous build's vectors are looked up by a digest of that
text. The context carries the post title, date, node label and, for a reply, the opening words of
its comment: editing a comment re-embeds its replies, retitling a post re-embeds all of it, and
nothing else needs tracking. Chunking and sentence splitting still run over the whole corpus (they
are fast, and they decide what the texts are); only encoding is skipped.

What changed post by post and node by node (`Document.fingerprint`, `Node.content_hash`) is counted
for the report; it does not decide what is re-embedded, the texts do.

Not here: whether a previous build may be reused at all (same model and chunking; see
`rag.ingest.index.build`), and saving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.ingest.corpus import Document


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class VectorCache:
    """Vectors already computed, found by the text they embed."""

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []
        self._rows: dict[bytes, tuple[int, int]] = {}  # text key -> (array, row)

    def add(self, texts: Iterable[str], vectors: np.ndarray) -> None:
        """Remember `vectors[i]` as the vector of `texts[i]` (the array is kept, not copied)."""
        which = len(self._arrays)
        self._arrays.append(vectors)
        for row, text in enumerate(texts):
            self._rows.setdefault(text_key(text), (which, row))

    def fill(self, texts: Sequence[str], out: np.ndarray) -> list[int]:
        """Copy the known vectors of `texts` into the rows of `out`; return the rows still to encode."""
        missing = []
        for i, text in enumerate(texts):
            found = self._rows.get(text_key(text))
            if found is None:
                missing.append(i)
            else:
                out[i] = self._arrays[found[0]][found[1]]
        return missing


@dataclass(frozen=True)
class Changes:
    """How a corpus differs from the one a previous build indexed, in posts and in nodes."""

    posts_added: int
    posts_changed: int
    posts_removed: int
    posts_unchanged: int
    nodes_new: int  # added, or changed in place
    nodes_removed: int  # their place (post, comment, reply) is gone
    nodes_unchanged: int

    def summary(self) -> str:
        return (
            f"posts: {self.posts_added} added, {self.posts_changed} changed, {self.posts_removed} removed, "
            f"{self.posts_unchanged} unchanged; nodes: {self.nodes_new} new or changed, "
            f"{self.nodes_removed} removed, {self.nodes_unchanged} unchanged"
        )


def _nodes(docs: Iterable[Document]) -> dict[tuple[str, str, int | None, int | None], str]:
    return {(d.id, n.kind, n.comment, n.reply): n.content_hash for d in docs for n in d.nodes}


def changes(before: Sequence[Document], after: Sequence[Document]) -> Changes:
    """What `after` adds, changes and removes compared with `before`."""
    old = {d.id: d.fingerprint for d in before}
    new = {d.id: d.fingerprint for d in after}
    old_nodes, new_nodes = _nodes(before), _nodes(after)
    kept = sum(1 for key, digest in new_nodes.items() if old_nodes.get(key) == digest)
    return Changes(
        posts_added=len(new.keys() - old.keys()),
        posts_changed=sum(1 for k in new.keys() & old.keys() if new[k] != old[k]),
        posts_removed=len(old.keys() - new.keys()),
        posts_unchanged=sum(1 for k in new.keys() & old.keys() if new[k] == old[k]),
        nodes_new=len(new_nodes) - kept,
        nodes_removed=len(old_nodes.keys() - new_nodes.keys()),
        nodes_unchanged=kept,
    )
