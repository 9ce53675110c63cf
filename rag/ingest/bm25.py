"""BM25 over the chunks (bm25s): built with the index, saved in it, memory-mapped at load.

A chunk is indexed as its context label and its text, lower-cased, stopwords removed (bm25s's
English list) and Snowball-stemmed; a query is tokenised the same way. Tokenising every chunk is
the costly part (1.6 s of a 2.9 s load at 10k passages when the retriever did it at load), so it is
done once, at ingest, not in every process that loads the index.

On disk, ``bm25/`` holds bm25s's own files: the score matrix as CSC arrays (``data``, ``indices``,
``indptr``, ``.npy``, memory-mapped at load for a large index so worker processes share one copy
through the page cache, read into memory for a small one), the vocabulary (JSON) and the
parameters. An index of no chunks has no ``bm25/``.

Not here: fusing BM25 with the dense signals (`rag.search.retrieval`).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np

from rag.ingest.chunking import Chunk
from rag.text import BM25_STOPWORDS, new_stemmer

DIRECTORY = "bm25"
_ARRAYS = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy")
_FILES = (*_ARRAYS, "vocab.index.json", "params.index.json")


class BM25Index:
    """BM25 scores of every chunk for a query."""

    def __init__(self, model: bm25s.BM25 | None, n_docs: int) -> None:
        self._model = model  # None when there is nothing to index (bm25s cannot index no documents)
        self.n_docs = n_docs
        self._stemmer = new_stemmer()  # PyStemmer objects are not shared across indexes
        # A query is tokenised for its scores and again for its coverage (adaptive fusion): once.
        self._terms = lru_cache(maxsize=256)(self._tokenize)

    @classmethod
    def build(cls, chunks: Sequence[Chunk]) -> BM25Index:
        """Tokenise and index every chunk (its context label, then its text)."""
        if not chunks:
            return cls(None, 0)
        corpus = [f"{c.context}\n{c.text}" for c in chunks]
        tokens = bm25s.tokenize(corpus, stopwords=BM25_STOPWORDS, stemmer=new_stemmer(), show_progress=False)
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        return cls(model, len(chunks))

    def _tokenize(self, query: str) -> tuple[str, ...]:
        """`query` tokenised as the chunks were: lower-cased, stopwords out, stemmed."""
        tokens = bm25s.tokenize(
            [query], stopwords=BM25_STOPWORDS, stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        return tuple(tokens[0])

    def scores(self, query: str) -> np.ndarray:
        """(n_docs,) float32 BM25 scores of `query`; zeros when none of its terms is indexed."""
        if self._model is None:
            return np.zeros(self.n_docs, dtype=np.float32)
        known = [t for t in self._terms(query) if t in self._model.vocab_dict]
        if not known:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.asarray(self._model.get_scores(known), dtype=np.float32)

    def coverage(self, query: str, doc: int) -> float:
        """The share of `query`'s terms that chunk `doc` holds, each term weighted by its idf
        (BM25's, log(1 + (N - df + 0.5) / (df + 0.5))); a term no chunk holds weighs the most.
        0.0 for a query with no terms."""
        terms = set(self._terms(query))
        if self._model is None or not terms:
            return 0.0
        vocab = self._model.vocab_dict
        # CSC: the chunks holding term t are indices[indptr[t] : indptr[t + 1]]. Plain views of the
        # memory-mapped arrays: slicing a np.memmap costs more than the lookups themselves.
        indptr, indices = (self._model.scores[k].view(np.ndarray) for k in ("indptr", "indices"))
        known = np.array([vocab[t] for t in terms if t in vocab], dtype=np.int64)
        starts, ends = indptr[known], indptr[known + 1]
        idf = np.log1p((self.n_docs - (ends - starts) + 0.5) / (ends - starts + 0.5))
        spans = zip(starts.tolist(), ends.tolist(), idf.tolist(), strict=True)
        held = sum(w for s, e, w in spans if doc in indices[s:e])
        unknown = (len(terms) - len(known)) * math.log1p((self.n_docs + 0.5) / 0.5)  # df 0
        return float(held / (float(idf.sum()) + unknown))

    def save(self, directory: Path) -> list[str]:
        """Write under `directory`/bm25/; returns the file names written, relative to `directory`."""
        if self._model is None:
            return []
        target = directory / DIRECTORY
        self._model.save(target, show_progress=False)
        # numpy loses a failed final flush of np.save (a short file on a full disk) without a word:
        # read each array back as it will be loaded, so a short one fails the save (as in vectors).
        for name in _ARRAYS:
            try:
                np.load(target / name, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise OSError(errno.EIO, f"{DIRECTORY}/{name} was not written whole (disk full?)") from exc
        return [f"{DIRECTORY}/{name}" for name in _FILES]

    @classmethod
    def load(cls, directory: Path, n_docs: int, mapped: bool = True) -> BM25Index:
        """Memory-map the index saved under `directory` for `n_docs` chunks (or read it into memory,
        when not `mapped`). Raises ValueError when it does not hold that many."""
        if n_docs == 0:
            return cls(None, 0)
        model = bm25s.BM25.load(directory / DIRECTORY, mmap=mapped, load_corpus=False, show_progress=False)
        if model.scores["num_docs"] != n_docs:
            raise ValueError(f"{DIRECTORY}/ indexes {model.scores['num_docs']} chunks, the store {n_docs}")
        return cls(model, n_docs)
