"""Vector search: exact below a size, IVF above it with recall@10 >= 0.95 against exact, saved and
memory-mapped back with the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.ingest import vectors
from rag.ingest.index import Index, load
from rag.search.retrieval import Filters, Retriever
from rag.synth import clustered_vectors

DIM = 64


@pytest.fixture(scope="module")
def matrix() -> np.ndarray:
    return clustered_vectors([20] * 200, DIM, seed=3)  # 4,000 vectors around 200 topics


def test_vectors_small_set_is_exact(matrix: np.ndarray) -> None:
    built = vectors.build(matrix[:500], exact_below=1000)
    assert built.spec == {"type": "exact"} and built.ann is None
    queries = vectors.sample_queries(matrix[:500], 20)
    found = np.array([built.search(q, 10) for q in queries])
    assert (found == vectors.exact_top(matrix[:500], queries, 10)).all()


def test_vectors_large_set_gets_ivf_with_measured_recall(matrix: np.ndarray) -> None:
    built = vectors.build(matrix, exact_below=1000)
    assert built.spec["type"] == "ivf"
    assert built.spec["recall_at_10"] >= vectors.TARGET_RECALL
    assert 1 <= built.spec["nprobe"] <= built.spec["nlist"]


def test_vectors_ivf_reloads_memory_mapped_with_recall_against_exact(
    matrix: np.ndarray, tmp_path: Path
) -> None:
    built = vectors.build(matrix, exact_below=1000)
    names = vectors.save(built, tmp_path, "chunks")
    assert names == ["chunks.npy", "chunks.ivf"]
    loaded = vectors.load(tmp_path, "chunks", built.spec)
    assert isinstance(loaded.matrix.base, np.memmap)  # a view of the mapped file, not a copy
    # Queries other than the calibration's (another seed) still find >= 0.95 of the exact top 10.
    queries = vectors.sample_queries(matrix, 300, seed=99)
    found = np.array([loaded.search(q, 10) for q in queries])
    assert vectors.recall_at(found, vectors.exact_top(matrix, queries, 10)) >= 0.95
    assert (found == np.array([built.search(q, 10) for q in queries])).all()


def test_vectors_filtered_search_returns_only_allowed_rows(matrix: np.ndarray) -> None:
    built = vectors.build(matrix, exact_below=1000)
    allowed = np.arange(0, len(matrix), 7, dtype=np.int64)
    q = vectors.sample_queries(matrix, 1)[0]
    ids = built.search(q, 10, allowed)
    assert len(ids) == 10 and set(ids) <= set(allowed.tolist())
    assert ids == [int(allowed[i]) for i in vectors.exact_top(matrix[allowed], q[None], 10)[0]]


def test_vectors_file_not_matching_its_spec_is_refused(matrix: np.ndarray, tmp_path: Path) -> None:
    vectors.save(vectors.build(matrix[:100]), tmp_path, "chunks")
    with pytest.raises(ValueError, match="unknown vector index type"):
        vectors.load(tmp_path, "chunks", {"type": "hnsw"})


def test_index_loaded_memory_mapped_answers_as_the_built_one(
    index: Index, retriever: Retriever, settings: object
) -> None:
    loaded = load(settings.index_dir, map_above=0)  # type: ignore[attr-defined]
    # views of the mapped files (not copies); the index built in memory holds plain arrays
    assert isinstance(loaded.vectors.base, np.memmap) and isinstance(loaded.sentence_vectors.base, np.memmap)
    assert not isinstance(index.vectors.base, np.memmap)
    from_disk = Retriever(loaded, retriever.embedder, retriever.weights, candidates=retriever.candidates)
    queries = ["pay progression", "Serco contracts", "why did the CRCs fail", "Working Links collapse"]
    for query in queries:
        for filters in (None, Filters(kind=["comment"])):
            expected = [(h.chunk.id, h.score) for h in retriever.search(query, 10, filters)]
            assert [(h.chunk.id, h.score) for h in from_disk.search(query, 10, filters)] == expected
