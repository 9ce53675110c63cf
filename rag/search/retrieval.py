"""Hybrid retrieval: BM25 (bm25s) and dense (FAISS) scores fused, filtered and de-duplicated.

Per query, three signals are computed for a pool of candidate chunks:

- ``bm25``: BM25 over the chunk text with its post title and node label (stemmed, stopwords removed);
- ``dense``: cosine of the query with the chunk's embedding (title and label embedded with it);
- ``sentence``: the best cosine of the query with any sentence of the chunk, which finds a
  one-sentence answer inside a long chunk that the chunk's averaged embedding blurs.

Each signal is z-scored against its top values in the pool and combined with weights. By default
(`fusion="adaptive"`) the dense signals' share depends on the query: it is scaled by the
idf-weighted share of the query's terms that BM25's best candidate lacks, so a query whose words
BM25 finds together is ordered by BM25 alone, and one worded away from the text (a paraphrase)
gets the dense share in full. `fusion="weighted"` uses the weights as given and `fusion="rrf"`
combines reciprocal ranks instead of z-scores. The choice among them was made by cross-validation
with each question set held out in turn (see README, "Quality on unseen questions").
Then near-duplicate chunks (pasted articles, repeated paragraphs) keep only their best-ranked
member, so repeats never crowd a result list.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Literal, get_args

import numpy as np

from rag.errors import InvalidRequestError
from rag.ingest.chunking import Chunk
from rag.ingest.corpus import KINDS
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index
from rag.search.batching import QueryBatcher

Mode = Literal["hybrid", "bm25", "dense"]
Fusion = Literal["weighted", "rrf", "adaptive"]
FUSIONS: tuple[Fusion, ...] = get_args(Fusion)
NORM_TOP = 30  # fusion normalises each signal by mean/std of its top NORM_TOP pool values
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009)


@dataclass(frozen=True)
class Filters:
    """Optional restrictions on what a search may return. Empty means no restriction."""

    document_id: Sequence[str] = ()
    source: Sequence[str] = ()
    kind: Sequence[str] = ()
    date_from: str | None = None  # ISO date, inclusive
    date_to: str | None = None  # ISO date, inclusive

    def __post_init__(self) -> None:
        bad = [k for k in self.kind if k not in KINDS]
        if bad:
            raise InvalidRequestError(f"unknown kind {bad[0]!r}; choose from {', '.join(KINDS)}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise InvalidRequestError(f"date_from ({self.date_from}) is after date_to ({self.date_to})")

    @property
    def empty(self) -> bool:
        return not (self.document_id or self.source or self.kind or self.date_from or self.date_to)

    def allows(self, chunk: Chunk) -> bool:
        if self.document_id and chunk.document_id not in self.document_id:
            return False
        if self.source and chunk.source not in self.source:
            return False
        if self.kind and chunk.kind not in self.kind:
            return False
        if self.date_from or self.date_to:
            # An undated post cannot be shown to fall inside a date range.
            if chunk.date is None:
                return False
            if self.date_from and chunk.date < self.date_from:
                return False
            if self.date_to and chunk.date > self.date_to:
                return False
        return True


class _Columns:
    """What filters test, one array per field over all chunks, so a filtered search builds its mask
    with a few array operations instead of calling `Filters.allows` on every chunk (same answer:
    numpy compares the ISO dates as Python compares the strings)."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self._documents = {d: i for i, d in enumerate(dict.fromkeys(c.document_id for c in chunks))}
        self._sources = {s: i for i, s in enumerate(dict.fromkeys(c.source for c in chunks))}
        n = len(chunks)
        self.document = np.fromiter((self._documents[c.document_id] for c in chunks), np.int64, n)
        self.source = np.fromiter((self._sources[c.source] for c in chunks), np.int64, n)
        self.kind = np.fromiter((KINDS.index(c.kind) for c in chunks), np.int64, n)
        self.dated = np.fromiter((c.date is not None for c in chunks), bool, n)
        self.date = np.array([c.date or "" for c in chunks], dtype=str)

    def allowed(self, filters: Filters) -> np.ndarray:
        """(n_chunks,) bool: the chunks `filters` allows."""
        mask = np.ones(len(self.kind), dtype=bool)
        if filters.document_id:
            mask &= np.isin(self.document, [self._documents.get(d, -1) for d in filters.document_id])
        if filters.source:
            mask &= np.isin(self.source, [self._sources.get(s, -1) for s in filters.source])
        if filters.kind:
            mask &= np.isin(self.kind, [KINDS.index(k) for k in filters.kind])
        if filters.date_from or filters.date_to:
            mask &= self.dated  # an undated post cannot be shown to fall inside a date range
            if filters.date_from:
                mask &= self.date >= filters.date_from
            if filters.date_to:
                mask &= self.date <= filters.date_to
        return mask


def _top_positive(scores: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
    """Ids of the (at most) `k` highest positive `scores`, among `rows` when given, in no order.
    A partition, not a sort of every score: O(n) at a million chunks. Ties at the cut go to the
    lower id."""
    ids = np.flatnonzero(scores > 0) if rows is None else rows[scores[rows] > 0]
    if len(ids) <= k:
        return ids
    values = scores[ids]
    cut = np.partition(values, len(values) - k)[len(values) - k]  # the k-th highest value
    above = ids[values > cut]
    return np.concatenate([above, ids[values == cut][: k - len(above)]])


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score and the signals behind it."""

    chunk: Chunk
    score: float
    signals: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FusionWeights:
    """Weights of the normalised signals; they need not sum to one."""

    bm25: float = 0.45
    dense: float = 0.0
    sentence: float = 0.55


def query_batcher(embedder: Embedder, lanes: int = 0) -> QueryBatcher:
    """The batcher a retriever encodes its queries with: wide passes on every core torch uses, and
    `lanes` narrow ones (0: as many as those cores) side by side under load."""
    threads = embedder.threads
    return QueryBatcher(
        partial(embedder.encode, threads=threads),
        narrow=partial(embedder.encode, threads=1),
        lanes=lanes or threads,
    )


class Retriever:
    """Answers queries over an `Index` with an `Embedder` (both injected)."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        weights: FusionWeights | None = None,
        fusion: Fusion = "adaptive",
        candidates: int = 100,
        lanes: int = 0,
        batcher: QueryBatcher | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.weights = weights or FusionWeights()
        self.fusion = fusion
        self.candidates = candidates
        self._columns = _Columns(index.chunks)
        # (sentence, chunk) pairs, one per chunk a sentence belongs to, in sentence order.
        per_sentence = np.fromiter((len(s.chunks) for s in index.sentences), np.int64, len(index.sentences))
        chunk_of = np.fromiter(
            itertools.chain.from_iterable(s.chunks for s in index.sentences),
            np.int64,
            int(per_sentence.sum()),
        )
        self._pair_sentence = np.repeat(np.arange(len(index.sentences), dtype=np.int64), per_sentence)
        self._pair_chunk = chunk_of
        # chunk -> its sentences, flattened (CSR): chunk i's sentences, in file order, are
        # _sentence_ids[_sentence_ptr[i] : _sentence_ptr[i + 1]], so the sentence signal for a whole
        # candidate pool is a few array operations, not a Python loop.
        order = np.argsort(chunk_of, kind="stable")  # stable: sentences stay in file order
        self._sentence_ids = self._pair_sentence[order]
        counts = np.bincount(chunk_of, minlength=len(index.chunks))
        self._sentence_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # Concurrent searches share one forward pass (see rag.search.batching).
        # A lone query uses every core torch would; under load passes run on one each, side by side.
        # A server passes the batcher of the index it served before, so one set of lanes spans them.
        self.batcher = batcher or query_batcher(embedder, lanes)
        # An answer embeds its query twice (search, then sentence scores): remember recent vectors.
        self.query_vector = lru_cache(maxsize=256)(self._encode_query)

    def _encode_query(self, query: str) -> np.ndarray:
        vector = self.batcher.encode(query)
        vector.setflags(write=False)  # shared by every caller of the cache
        return vector

    def sentence_scores(self, query: str, chunk: Chunk) -> list[tuple[str, float]]:
        """The indexed sentences of `chunk`, each with its cosine to `query` (embedded with the
        sentence's post and comment context, as for the sentence signal)."""
        position = self.index.by_id.get(chunk.id)
        if position is None:
            return []
        q = self.query_vector(query)
        ids = self._sentence_ids[self._sentence_ptr[position] : self._sentence_ptr[position + 1]]
        sims = self.index.sentence_vectors[ids] @ q
        return [(self.index.sentences[i].text, float(v)) for i, v in zip(ids, sims, strict=True)]

    # ------------------------------------------------------------ signals

    def _best_sentence(self, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(len(ids),) the best cosine of `q` with any sentence of each chunk; -inf for none."""
        starts = self._sentence_ptr[ids]
        counts = self._sentence_ptr[ids + 1] - starts
        best = np.full(len(ids), -np.inf, dtype=np.float32)
        total = int(counts.sum())
        if total == 0:
            return best
        # positions of every candidate's sentences in _sentence_ids, candidate after candidate
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        offsets = np.repeat(starts - firsts, counts)
        sentences = self._sentence_ids[offsets + np.arange(total)]
        sims = self.index.sentence_vectors[sentences] @ q
        # Each candidate's sentences are one contiguous run of `sims`: a max per run (reduceat),
        # taken only for candidates that have sentences (reduceat reads an empty run as one value).
        has = counts > 0
        best[has] = np.maximum.reduceat(sims, firsts[has])
        return best

    # ------------------------------------------------------------ search

    def search(
        self,
        query: str,
        k: int = 5,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The `k` best distinct chunks for `query`, best first.

        `vector` is the query's embedding when the caller already has it (`search_many` encodes a
        whole batch in one forward pass).
        """
        if not query.strip():
            raise InvalidRequestError("query is empty")
        filters = filters or Filters()
        chunks = self.index.chunks
        # Without filters every chunk is allowed: no mask at all.
        allowed_mask = None if filters.empty else self._columns.allowed(filters)
        allowed = None if allowed_mask is None else np.flatnonzero(allowed_mask)
        if allowed is not None and len(allowed) == 0:
            return []

        pool: set[int] = set()
        bm25 = self.index.bm25.scores(query) if mode != "dense" else np.zeros(len(chunks), np.float32)
        if mode != "dense":
            pool.update(_top_positive(bm25, allowed, self.candidates).tolist())

        dense: dict[int, float] = {}
        sentence: dict[int, float] = {}
        if mode != "bm25":
            q = (self.query_vector(query) if vector is None else vector).reshape(1, -1)  # (1, dim)
            pool.update(self.index.chunk_search.search(q, self.candidates, allowed))
            sent_allowed = None
            if allowed_mask is not None:  # the sentences of at least one allowed chunk, sorted
                # (a mask, not np.unique: its hashing took 23 ms a query at 40k sentences)
                sent_mask = np.zeros(len(self.index.sentences), dtype=bool)
                sent_mask[self._pair_sentence[allowed_mask[self._pair_chunk]]] = True
                sent_allowed = np.flatnonzero(sent_mask)
            for s in self.index.sentence_search.search(q, self.candidates, sent_allowed):
                pool.update(
                    c for c in self.index.sentences[s].chunks if allowed_mask is None or allowed_mask[c]
                )
            ids = np.fromiter(pool, dtype=np.int64)
            if len(ids):
                chunk_sims = self.index.vectors[ids] @ q[0]
                dense = {int(i): float(v) for i, v in zip(ids, chunk_sims, strict=True)}
                best = np.maximum(chunk_sims, self._best_sentence(ids, q[0]))
                sentence = {int(i): float(v) for i, v in zip(ids, best, strict=True)}

        if not pool:
            return []
        pool_ids = sorted(pool)
        signals = {
            "bm25": {i: float(bm25[i]) for i in pool_ids} if mode != "dense" else {},
            "dense": dense,
            "sentence": sentence,
        }
        fused = self._fuse(pool_ids, signals, mode, self._query_weights(query, bm25, pool_ids, mode))
        order = sorted(pool_ids, key=lambda i: (-fused[i], i))
        hits: list[Hit] = []
        seen_groups: set[int] = set()
        for i in order:
            group = self.index.dup_of[i]
            group = i if group is None else group
            if group in seen_groups:
                continue
            seen_groups.add(group)
            hits.append(Hit(chunks[i], fused[i], {name: sig[i] for name, sig in signals.items() if i in sig}))
            if len(hits) == k:
                break
        return hits

    def search_many(
        self, requests: Sequence[tuple[str, int, Filters | None]]
    ) -> list[tuple[list[Hit], float]]:
        """(hits, milliseconds) for each (query, k, filters), in order. The queries are embedded
        together: one forward pass for the batch instead of one per query. Each search's time
        includes its share of that pass."""
        started = time.perf_counter()
        vectors = self.batcher.encode_many([query for query, _, _ in requests])
        share = (time.perf_counter() - started) * 1000.0 / max(1, len(requests))
        out = []
        for (query, k, filters), vector in zip(requests, vectors, strict=True):
            hits, took_ms = timed_search(self, query, k, filters, vector)
            out.append((hits, took_ms + share))
        return out

    def _query_weights(self, query: str, bm25: np.ndarray, ids: list[int], mode: Mode) -> FusionWeights:
        """The weights for this query: the retriever's, or for `adaptive` fusion, the dense share
        scaled by how much of the query BM25's best candidate misses (its idf-weighted share of
        the query's terms that the chunk lacks): a query whose words BM25 finds together needs
        no help from the dense signal; one worded away from the text (a paraphrase) gets it all."""
        if self.fusion != "adaptive" or mode != "hybrid" or not ids:
            return self.weights
        pool = np.asarray(ids)  # sorted: a tie goes to the lower id
        missing = 1.0 - self.index.bm25.coverage(query, int(pool[np.argmax(bm25[pool])]))
        w = self.weights
        total = w.bm25 + w.dense + w.sentence
        dense, sentence = w.dense * missing, w.sentence * missing
        return FusionWeights(bm25=total - dense - sentence, dense=dense, sentence=sentence)

    def _fuse(
        self, ids: list[int], signals: dict[str, dict[int, float]], mode: Mode, weights: FusionWeights
    ) -> dict[int, float]:
        if mode == "bm25":
            return {i: signals["bm25"][i] for i in ids}
        if mode == "dense":
            return {i: signals["sentence"][i] for i in ids}
        by_name = {"bm25": weights.bm25, "dense": weights.dense, "sentence": weights.sentence}
        fused = np.zeros(len(ids))
        for name, sig in signals.items():
            if not sig or by_name[name] == 0:
                continue
            values = np.array([sig[i] for i in ids], dtype=np.float64)
            fused += by_name[name] * (_rrf(values, name == "bm25") if self.fusion == "rrf" else _z(values))
        return {i: float(v) for i, v in zip(ids, fused, strict=True)}


def _z(values: np.ndarray) -> np.ndarray:
    """z-scores against the top NORM_TOP values: the long tail of weak candidates would otherwise
    set the scale (as min-max's minimum did)."""
    top = np.sort(values)[::-1][:NORM_TOP]
    std = float(top.std())
    return (values - float(top.mean())) / std if std > 0 else np.zeros_like(values)


def _rrf(values: np.ndarray, positive_only: bool) -> np.ndarray:
    """1 / (RRF_K + rank), rank 1 for the highest value (ties in pool order). With
    `positive_only` (BM25), a candidate scoring 0 matched no query term and gets nothing."""
    ranks = np.empty(len(values))
    ranks[np.argsort(-values, kind="stable")] = np.arange(1, len(values) + 1)
    out = 1.0 / (RRF_K + ranks)
    return np.where(values > 0, out, 0.0) if positive_only else out


def timed_search(
    retriever: Retriever, query: str, k: int, filters: Filters | None, vector: np.ndarray | None = None
) -> tuple[list[Hit], float]:
    """Search and the wall time it took, in milliseconds."""
    started = time.perf_counter()
    hits = retriever.search(query, k, filters, vector=vector)
    return hits, (time.perf_counter() - started) * 1000.0
