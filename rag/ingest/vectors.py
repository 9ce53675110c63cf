"""A set of L2-normalised vectors and the top-k search over it, exact or approximate by size.

Below `EXACT_BELOW` vectors the search is exact: FAISS's flat inner-product kernel run straight
over the matrix. From there up an IVF index (inverted lists over k-means cells, flat vectors in
the lists) answers, with its probe count chosen at build time by measurement: the smallest
`nprobe` whose recall@10 against exact search reaches `TARGET_RECALL` on queries drawn near the
stored vectors. The choice and its measured recall go into the manifest (`spec`).

On disk a set is ``<stem>.npy`` (the matrix) and, for IVF, ``<stem>.ivf``. A large index maps
both at load (``np.load(mmap_mode="r")``, ``faiss.IO_FLAG_MMAP``), so worker processes serving the
same index share one copy through the page cache, and nothing is copied to answer or re-score: the
retriever reads rows of `matrix` directly. A small one is read into memory instead, where a file
changed on disk cannot reach it (`rag.ingest.index` chooses).

Why IVF and not HNSW: on this 2-core machine HNSW (M=32) added 20,000 vectors in 17 s, so a million
would take the better part of an hour per set; IVF trains on a sample and adds a million in about
a minute, and its lists can be memory-mapped by this FAISS version (1.15.1).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# faiss is imported inside the functions that use it: a build below EXACT_BELOW (every `rag ingest` of
# the bundled corpus) needs none of it, and its import is a fifth of a second of each ingest's start.

# Measured (README, Scale): exact top-100 took 2 ms at 10k vectors but 220 ms at 30k and 630 ms at 100k
# on this shared 2-core machine (FAISS's flat kernel goes multi-threaded and stalls under load), while
# IVF answered in under 1 ms at recall@10 >= 0.98; below 20k exact stays cheap and needs no build.
EXACT_BELOW = 20_000
TARGET_RECALL = 0.99  # well above the 0.95 promised: at 0.97 on 200 sample queries, other queries got 0.94
_CALIBRATION_QUERIES = 200
_QUERY_NOISE = 1.0  # noise norm added to a stored vector to make a query: cosine to it about 0.7
_EXACT_SUBSET = 20_000  # a filter allowing at most this many vectors is searched exactly
_SEED = 1234


@dataclass
class VectorIndex:
    """`matrix` (n, dim) float32, L2-normalised, and how to find its top-k for a query."""

    matrix: np.ndarray
    spec: dict[str, Any]  # {"type": "exact"} or {"type": "ivf", "nlist", "nprobe", "recall_at_10"}
    ann: Any = field(default=None, repr=False)  # the FAISS IVF index, when spec["type"] == "ivf"

    @property
    def ntotal(self) -> int:
        return int(self.matrix.shape[0])

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
        """Row ids of the `k` best rows for one query `q` ((dim,) or (1, dim)), best first; only rows
        in `allowed` (sorted ids) when given."""
        import faiss

        k = min(k, self.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return []
        q = np.ascontiguousarray(q.reshape(1, -1), dtype=np.float32)
        bitmap = None if allowed is None else _bitmap(allowed, self.ntotal)  # alive as long as the selector
        selector = None if bitmap is None else faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(bitmap))
        with _one_thread():
            if self.ann is None or (allowed is not None and len(allowed) <= _EXACT_SUBSET):
                return _exact(self.matrix, q, k, selector)
            params = faiss.SearchParametersIVF(nprobe=int(self.spec["nprobe"]))  # type: ignore[call-arg]
            if selector is not None:
                params.sel = selector
            _, ids = self.ann.search(q, k, params=params)
        return [int(i) for i in ids[0] if i >= 0]


def _bitmap(allowed: np.ndarray, n: int) -> np.ndarray:
    """`allowed` row ids as FAISS's IDSelectorBitmap reads them (bit i of byte i // 8, low bit
    first). The same rows as an IDSelectorBatch, which took 3 ms a query to build (a hash set)
    over 20k allowed ids."""
    mask = np.zeros(n, dtype=bool)
    mask[allowed] = True
    return np.packbits(mask, bitorder="little")


@contextmanager
def _one_thread() -> Iterator[None]:
    """FAISS's OpenMP on one thread (this thread only: the setting is per calling thread) for the
    span of one query's search. Measured at 10k vectors with one other busy process on the 2 cores:
    exact top-100 took 20 ms p50 with two OpenMP threads and 1 ms with one (the second thread's
    share waits for a core); one query is too little work to split. Builds keep every thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _exact(matrix: np.ndarray, q: np.ndarray, k: int, selector: Any = None) -> list[int]:
    """FAISS's flat inner-product kernel over `matrix` as it lies (a memory map stays one), the
    same code and so the same ties as `IndexFlatIP.search`."""
    import faiss

    base = np.ascontiguousarray(matrix, dtype=np.float32)
    dists = np.empty((len(q), k), dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    faiss.knn_inner_product(
        faiss.swig_ptr(q),
        faiss.swig_ptr(base),
        base.shape[1],
        len(q),
        len(base),
        k,
        faiss.swig_ptr(dists),
        faiss.swig_ptr(ids),
        selector,
    )
    return [int(i) for i in ids[0] if i >= 0]


def exact_top(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(n_queries, k) exact top-k row ids: the reference recall is measured against."""
    import faiss

    _, ids = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), matrix, k, faiss.METRIC_INNER_PRODUCT)
    return np.asarray(ids)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k found in its returned top-k."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def sample_queries(matrix: np.ndarray, n: int, seed: int = _SEED) -> np.ndarray:
    """`n` queries near stored vectors (each a stored row plus noise, renormalised), as a real
    query lies near the passages that answer it."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(matrix), size=min(n, len(matrix)), replace=False))
    noise = rng.standard_normal((len(rows), matrix.shape[1])).astype(np.float32)
    noise *= _QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    queries: np.ndarray = np.asarray(matrix[rows], dtype=np.float32) + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries


def _nlist(n: int) -> int:
    """Cells: a power of two near 2*sqrt(n), so a probe scans about sqrt(n)/2 vectors."""
    return int(2 ** round(math.log2(max(16.0, 2 * math.sqrt(n)))))


def build(matrix: np.ndarray, exact_below: int = EXACT_BELOW) -> VectorIndex:
    """The search structure for `matrix`, exact or IVF as its size says, calibrated."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, dim = matrix.shape
    if n < exact_below:
        return VectorIndex(matrix, {"type": "exact"})
    import faiss

    nlist = _nlist(n)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 10  # k-means: 10 rounds reach the recall target; the default 25 only costs time
    rng = np.random.default_rng(_SEED)
    train = min(n, 40 * nlist)
    ivf.train(matrix[np.sort(rng.choice(n, size=train, replace=False))])
    ivf.add(matrix)
    queries = sample_queries(matrix, _CALIBRATION_QUERIES)
    truth = exact_top(matrix, queries, 10)
    nprobe, recall = nlist, 1.0
    for probe in (2**i for i in range(int(math.log2(nlist)) + 1)):
        ivf.nprobe = probe
        _, found = ivf.search(queries, 10)
        recall = recall_at(found, truth)
        if recall >= TARGET_RECALL:
            nprobe = probe
            break
    ivf.nprobe = nprobe
    spec = {"type": "ivf", "nlist": nlist, "nprobe": nprobe, "recall_at_10": round(recall, 4)}
    return VectorIndex(matrix, spec, ivf)


def files(stem: str, spec: dict[str, Any]) -> list[str]:
    """The file names a set with this spec is saved as."""
    return [f"{stem}.npy"] + ([f"{stem}.ivf"] if spec["type"] == "ivf" else [])


def save(vectors: VectorIndex, directory: Path, stem: str) -> list[str]:
    """Write the set under `directory` as `stem`.*; returns the file names written."""
    path = directory / f"{stem}.npy"
    np.save(path, np.ascontiguousarray(vectors.matrix, dtype=np.float32))
    # numpy writes the array through C stdio and loses a failed final flush (the tail on a full disk)
    # without a word: read the file back as it will be loaded, so a short one fails the save instead
    # of being checksummed and made current.
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise OSError(errno.EIO, f"{path.name} was not written whole (disk full?)") from exc
    if vectors.ann is not None:
        import faiss

        # Serialised in memory and written by Python: `faiss.write_index` reports a write that fails
        # when the file is closed (the buffered tail on a full disk) only on stderr, leaving a truncated
        # file behind that would be checksummed and made current.
        (directory / f"{stem}.ivf").write_bytes(faiss.serialize_index(vectors.ann).tobytes())
    return files(stem, vectors.spec)


def load(directory: Path, stem: str, spec: dict[str, Any], mapped: bool = True) -> VectorIndex:
    """Memory-map a saved set, or read it into memory when not `mapped` (see `rag.ingest.index`
    for which). Raises ValueError when the files do not hold what `spec` says."""
    # A plain ndarray view of the mapping: still file-backed and shared, but indexing it skips
    # np.memmap's Python-level __getitem__ and __array_finalize__, which re-scoring a candidate
    # pool paid on every query (5% of a search's server time under load, by py-spy).
    path = directory / f"{stem}.npy"
    matrix = np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False).view(np.ndarray)
    if matrix.dtype != np.float32 or matrix.ndim != 2:
        raise ValueError(f"{stem}.npy holds {matrix.dtype} {matrix.shape}, not a float32 matrix")
    if spec.get("type") == "exact":
        return VectorIndex(matrix, spec)
    if spec.get("type") != "ivf":
        raise ValueError(f"unknown vector index type {spec.get('type')!r} for {stem}")
    import faiss

    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mapped else 0
    ivf = faiss.read_index(str(directory / f"{stem}.ivf"), flags)
    if ivf.ntotal != len(matrix):
        raise ValueError(f"{stem}.ivf holds {ivf.ntotal} vectors but {stem}.npy {len(matrix)}")
    return VectorIndex(matrix, spec, ivf)
