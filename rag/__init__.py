"""Cited question answering over a blog archive of posts, comments and replies.

The public API is the short list in `__all__`; everything else is internal. Names load lazily so
that `import rag` (and the `rag` command's help) does not pull in torch, FAISS or the model.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "build_index": ("rag.service", "ingest"),
    "open_index": ("rag.service", "open_index"),
    "Retriever": ("rag.search.retrieval", "Retriever"),
    "Filters": ("rag.search.retrieval", "Filters"),
    "Hit": ("rag.search.retrieval", "Hit"),
    "Chunk": ("rag.ingest.chunking", "Chunk"),
    "Passage": ("rag.search.passages", "Passage"),
    "resolve": ("rag.search.passages", "resolve"),
    "Embedder": ("rag.ingest.embedding", "Embedder"),
    "Answerer": ("rag.answer.answering", "Answerer"),
    "Answer": ("rag.answer.answering", "Answer"),
    "Client": ("rag.client", "Client"),
    "Settings": ("rag.settings", "Settings"),
    "RagError": ("rag.errors", "RagError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'rag' has no attribute {name!r}") from None
    return getattr(import_module(module), attr)
