"""Scale benchmark: build, load and search synthetic archives of 10k / 100k / 1M passages.

Text is real synthetic text (`rag synth`), parsed, chunked and split into sentences by the same
code as `rag ingest`, so BM25 and the chunk store are what they would be. Vectors are not
encoded (a million passages take hours on two cores): each post gets a seeded topic direction,
its chunks lie around it (`rag.synth.clustered_vectors`) and each sentence near its chunk, so
the vector side has the structure of real embeddings, and queries lie near the passage they come
from. Each stage runs in a fresh subprocess so its peak memory and load time are its own.

    .venv/bin/python scripts/bench_scale.py [--sizes 10000 100000 1000000] [--workdir DIR]

Prints one JSON line per size and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 384
CHUNKS_PER_POST = 33.7  # measured on `rag synth --comments 20` archives: posts ≈ passages / this
SENTENCE_SPREAD = 0.6  # noise norm of a sentence around its chunk's vector
QUERY_SPREAD = 1.0  # and of a query around the passage it comes from


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int], norm: float) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= norm / np.linalg.norm(noise, axis=1, keepdims=True)
    return noise


def build_stage(size: int, work: Path, seed: int) -> dict[str, Any]:
    from rag.ingest import vectors
    from rag.ingest.bm25 import BM25Index
    from rag.ingest.chunking import chunk_corpus
    from rag.ingest.corpus import load_corpus
    from rag.ingest.index import Index, IndexConfig, describe, save
    from rag.ingest.sentences import split_sentences
    from rag.search.dedup import duplicate_of
    from rag.settings import Settings
    from rag.synth import SynthSpec, clustered_vectors, write_archive

    data = work / f"data-{size}"
    started = time.perf_counter()
    if not data.exists():
        write_archive(ROOT / "data", data, SynthSpec(posts=max(1, round(size / CHUNKS_PER_POST)), seed=seed))
    synth_s = time.perf_counter() - started

    defaults = Settings.model_fields
    size_tokens, overlap = defaults["chunk_size"].default, defaults["chunk_overlap"].default
    t0 = time.perf_counter()
    corpus = load_corpus(data)
    chunks = chunk_corpus(corpus.documents, size_tokens, overlap)
    sentences = split_sentences(corpus.documents, chunks)
    dup_of = duplicate_of([c.text for c in chunks])
    text_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    per_doc: dict[str, int] = {}
    for c in chunks:
        per_doc[c.document_id] = per_doc.get(c.document_id, 0) + 1
    chunk_vecs = clustered_vectors(list(per_doc.values()), DIM, seed=seed)
    rng = np.random.default_rng(seed + 1)
    owner = np.fromiter((s.chunks[0] for s in sentences), dtype=np.int64, count=len(sentences))
    sent_vecs = np.empty((len(sentences), DIM), dtype=np.float32)
    for start in range(0, len(sentences), 200_000):  # in blocks: the noise would double the peak
        block = slice(start, start + 200_000)
        sent_vecs[block] = chunk_vecs[owner[block]] + _unit_noise(
            rng, (len(owner[block]), DIM), SENTENCE_SPREAD
        )
        sent_vecs[block] /= np.linalg.norm(sent_vecs[block], axis=1, keepdims=True)
    del owner
    fake_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    chunk_search = vectors.build(chunk_vecs)
    chunk_index_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    sentence_search = vectors.build(sent_vecs)
    sentence_index_s = time.perf_counter() - t3
    t5 = time.perf_counter()
    bm25 = BM25Index.build(chunks)
    bm25_s = time.perf_counter() - t5

    config = IndexConfig(model="synthetic-vectors", chunk_size=size_tokens, chunk_overlap=overlap)
    manifest = describe(config, DIM, corpus, chunks, sentences, chunk_search, sentence_search)
    index = Index(
        manifest=manifest,
        documents={d.id: d for d in corpus.documents},
        chunks=chunks,
        dup_of=dup_of,
        sentences=sentences,
        chunk_search=chunk_search,
        sentence_search=sentence_search,
        bm25=bm25,
    )
    t4 = time.perf_counter()
    build_dir = save(index, work / f"index-{size}")
    save_s = time.perf_counter() - t4
    return {
        "posts": len(corpus.documents),
        "chunks": len(chunks),
        "sentences": len(sentences),
        "synth_s": round(synth_s, 1),
        "parse_chunk_split_s": round(text_s, 1),
        "fake_vectors_s": round(fake_s, 1),
        "chunk_index_s": round(chunk_index_s, 1),
        "sentence_index_s": round(sentence_index_s, 1),
        "bm25_s": round(bm25_s, 1),
        "save_s": round(save_s, 1),
        "build_s": round(text_s + chunk_index_s + sentence_index_s + bm25_s + save_s, 1),
        "vector_index": manifest["vector_index"],
        "disk_mb": round(sum(p.stat().st_size for p in build_dir.rglob("*") if p.is_file()) / 2**20),
        "build_peak_rss_mb": round(peak_mb()),
    }


class _NoEncoder:
    """The retriever's embedder in this benchmark: every search passes its query vector, so
    encoding a query is a bug here, not a cost to measure."""

    threads = 1  # read when the Retriever builds its query batcher

    def encode(self, texts: list[str], threads: int | None = None) -> np.ndarray:
        raise RuntimeError("the scale benchmark passes every query vector; nothing is encoded")


def search_stage(index_dir: Path, seed: int, n_queries: int, map_above: int | None = None) -> dict[str, Any]:
    from rag.ingest import index as index_module
    from rag.ingest import vectors
    from rag.search.retrieval import Filters, Retriever

    root = (index_dir / "current").resolve()
    base_mb = status_mb("VmRSS")
    t0 = time.perf_counter()
    manifest = index_module.read_manifest(index_dir)
    for name, digest in manifest["files"].items():
        if index_module._sha256(root / name) != digest:
            raise SystemExit(f"{name} does not match its checksum")
    hash_s = time.perf_counter() - t0
    t_load = time.perf_counter()
    # Checks every sha256 again, as a server does; maps or reads into memory as a server would.
    index = index_module.load(index_dir, index_module.MAP_ABOVE if map_above is None else map_above)
    load_s = time.perf_counter() - t_load
    t1 = time.perf_counter()
    retriever = Retriever(index, embedder=_NoEncoder())  # type: ignore[arg-type]
    retriever_s = time.perf_counter() - t1
    loaded = {
        "rss_mb": round(status_mb("VmRSS") - base_mb),
        "rss_anon_mb": round(status_mb("RssAnon")),
        "rss_file_mb": round(status_mb("RssFile")),
    }

    rng = np.random.default_rng(seed + 7)
    picks = rng.choice(len(index.chunks), size=n_queries, replace=False)
    queries = []
    for i in picks:
        words = index.chunks[int(i)].text.split()
        start = int(rng.integers(0, max(1, len(words) - 6)))
        queries.append(" ".join(words[start : start + 6]))
    qvecs = np.asarray(index.vectors[picks], dtype=np.float32)
    qvecs += _unit_noise(rng, qvecs.shape, QUERY_SPREAD)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)

    retriever.search(queries[0], 10, vector=qvecs[0])  # first touch of the mapped pages
    times = []
    for query, vec in zip(queries, qvecs, strict=True):
        started = time.perf_counter()
        retriever.search(query, 10, vector=vec)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    # The same queries restricted to the later half of the posts (a date filter): the allowed set is
    # built per query, so this is where per-chunk work would show.
    dates = sorted(d.date for d in index.documents.values() if d.date)
    later = Filters(date_from=dates[len(dates) // 2])
    filtered = []
    for query, vec in zip(queries, qvecs, strict=True):
        started = time.perf_counter()
        retriever.search(query, 10, later, vector=vec)
        filtered.append((time.perf_counter() - started) * 1000)
    filtered.sort()

    recall = {}
    for name, search in (("chunks", index.chunk_search), ("sentences", index.sentence_search)):
        found = np.array([search.search(q, 10) for q in qvecs])
        recall[name] = round(vectors.recall_at(found, vectors.exact_top(search.matrix, qvecs, 10)), 4)
    return {
        "mapped": index.mapped,
        "mappable_mb": round(index.disk.total_bytes() / 2**20, 1) if index.disk else None,
        "hash_s": round(hash_s, 2),
        "load_s": round(load_s, 2),
        "retriever_init_s": round(retriever_s, 1),
        **loaded,
        "search_peak_rss_mb": round(peak_mb()),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "filtered_p50_ms": round(statistics.median(filtered), 1),
        "filtered_p95_ms": round(filtered[int(0.95 * (len(filtered) - 1))], 1),
        "recall_at_10": recall,
    }


def vector_build_stage(size: int, work: Path, seed: int) -> dict[str, Any]:
    """The vector side alone at `size` chunk vectors (for sizes where parsing and chunking the
    text would take hours here): generate, choose and build the index, save."""
    from rag.ingest import vectors
    from rag.synth import clustered_vectors

    rng = np.random.default_rng(seed)
    groups = rng.integers(1, 2 * round(CHUNKS_PER_POST), size=round(size / CHUNKS_PER_POST) * 2)
    groups = groups[: int(np.searchsorted(np.cumsum(groups), size)) + 1]
    matrix = clustered_vectors(groups.tolist(), DIM, seed=seed)[:size]
    t0 = time.perf_counter()
    built = vectors.build(matrix)
    index_s = time.perf_counter() - t0
    directory = work / f"vectors-{size}"
    directory.mkdir(exist_ok=True)
    t1 = time.perf_counter()
    vectors.save(built, directory, "chunks")
    (directory / "spec.json").write_text(json.dumps(built.spec))
    save_s = time.perf_counter() - t1
    return {
        "chunks": size,
        "chunk_index_s": round(index_s, 1),
        "save_s": round(save_s, 1),
        "vector_index": built.spec,
        "disk_mb": round(sum(p.stat().st_size for p in directory.iterdir()) / 2**20),
        "build_peak_rss_mb": round(peak_mb()),
    }


def vector_search_stage(size: int, work: Path, seed: int, n_queries: int) -> dict[str, Any]:
    """Load the vector side memory-mapped in a fresh process and time its top-100 (the retriever's
    candidate pool) per query, with recall@10 against exact search."""
    from rag.ingest import index as index_module
    from rag.ingest import vectors

    directory = work / f"vectors-{size}"
    spec = json.loads((directory / "spec.json").read_text())
    t0 = time.perf_counter()
    for name in vectors.files("chunks", spec):
        index_module._sha256(directory / name)
    hash_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    loaded = vectors.load(directory, "chunks", spec)
    load_s = time.perf_counter() - t1
    queries = vectors.sample_queries(loaded.matrix, n_queries, seed=seed + 7)
    loaded.search(queries[0], 100)
    times = []
    for q in queries:
        started = time.perf_counter()
        loaded.search(q, 100)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    found = np.array([loaded.search(q, 10) for q in queries])
    return {
        "hash_s": round(hash_s, 2),
        "load_s": round(load_s, 2),
        "rss_mb": round(status_mb("VmRSS")),
        "rss_anon_mb": round(status_mb("RssAnon")),
        "rss_file_mb": round(status_mb("RssFile")),
        "top100_p50_ms": round(statistics.median(times), 1),
        "top100_p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "recall_at_10": round(vectors.recall_at(found, vectors.exact_top(loaded.matrix, queries, 10)), 4),
    }


def run_stage(stage: str, size: int, work: Path, seed: int, queries: int, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--stage", stage, "--sizes", str(size), "--workdir", str(work)]
    cmd += ["--seed", str(seed), "--queries", str(queries), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| passages (sentences) | build s (index part) | build peak RSS | disk | load s (of it sha256) "
        "| RSS after load (anon / file-mapped) | retrieval p50 / p95 ms | with a date filter "
        "| vector index (chunks; sentences) | recall@10 vs exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vi = r["vector_index"]

        def spec(s: dict[str, Any]) -> str:
            return "exact" if s["type"] == "exact" else f"IVF{s['nlist']}, nprobe {s['nprobe']}"

        load = r["load_s"] + r["retriever_init_s"]
        vector_s = r["chunk_index_s"] + r["sentence_index_s"]
        lines.append(
            f"| {r['chunks']:,} ({r['sentences']:,}) | {r['build_s']} ({vector_s:.1f})"
            f" | {r['build_peak_rss_mb']:,} MB | {r['disk_mb']:,} MB | {load:.1f} ({r['hash_s']})"
            f" | {r['rss_mb']:,} MB ({r['rss_anon_mb']:,} / {r['rss_file_mb']:,})"
            f" | {r['p50_ms']} / {r['p95_ms']} | {r['filtered_p50_ms']} / {r['filtered_p95_ms']}"
            f" | {spec(vi['chunks'])}; {spec(vi['sentences'])}"
            f" | {r['recall_at_10']['chunks']}; {r['recall_at_10']['sentences']} |"
        )
    return "\n".join(lines)


def compare_load(args: argparse.Namespace) -> None:
    """Each index loaded in a fresh process memory-mapped (RAG_MAP_ABOVE_MB=0) and read into memory,
    alternating (mapped, memory, mapped, memory) so a change in the machine's load hits both."""
    targets: list[tuple[str, list[str]]] = []
    if args.index_dir is not None:
        targets.append((str(args.index_dir), ["--index-dir", str(args.index_dir.resolve())]))
    else:
        for size in args.sizes:
            if not (args.workdir / f"index-{size}" / "current").exists():
                run_stage("build", size, args.workdir, args.seed, args.queries)
            targets.append((str(size), []))
    for name, extra in targets:
        size = int(name) if name.isdigit() else 0
        for run in range(2):
            for mode, above in (("mapped", 0), ("memory", 2**62)):
                row = run_stage(
                    "search", size, args.workdir, args.seed, args.queries, *extra, "--map-above", str(above)
                )
                keep = (
                    "mappable_mb",
                    "hash_s",
                    "load_s",
                    "rss_mb",
                    "rss_anon_mb",
                    "rss_file_mb",
                    "p50_ms",
                    "p95_ms",
                )
                print(
                    json.dumps({"index": name, "mode": mode, "run": run + 1, **{k: row[k] for k in keep}}),
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rag-bench-scale"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--vectors-only", action="store_true", help="only the vector side (no text), e.g. for 1M"
    )
    parser.add_argument(
        "--compare-load",
        action="store_true",
        help="load each size (built if missing) memory-mapped and read into memory, alternately, twice each",
    )
    parser.add_argument(
        "--index-dir", type=Path, help="with --compare-load: an existing index (e.g. the bundled one's)"
    )
    parser.add_argument("--stage", choices=["build", "search", "vbuild", "vsearch"], help=argparse.SUPPRESS)
    parser.add_argument("--map-above", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.stage == "build":
        print(json.dumps(build_stage(args.sizes[0], args.workdir, args.seed)))
        return
    if args.stage == "search":
        index_dir = args.index_dir or args.workdir / f"index-{args.sizes[0]}"
        print(json.dumps(search_stage(index_dir, args.seed, args.queries, args.map_above)))
        return
    if args.compare_load:
        compare_load(args)
        return
    if args.stage == "vbuild":
        print(json.dumps(vector_build_stage(args.sizes[0], args.workdir, args.seed)))
        return
    if args.stage == "vsearch":
        print(json.dumps(vector_search_stage(args.sizes[0], args.workdir, args.seed, args.queries)))
        return
    if args.vectors_only:
        for size in args.sizes:
            row = {"size": size, **run_stage("vbuild", size, args.workdir, args.seed, args.queries)}
            row.update(run_stage("vsearch", size, args.workdir, args.seed, args.queries))
            print(json.dumps(row), flush=True)
        return
    rows = []
    for size in args.sizes:
        row = {"size": size, **run_stage("build", size, args.workdir, args.seed, args.queries)}
        row.update(run_stage("search", size, args.workdir, args.seed, args.queries))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
