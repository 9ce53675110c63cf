"""Incremental ingest: reusing the previous build's vectors gives exactly the index a full build gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.eval.retrieval import evaluate, load_questions
from rag.ingest.corpus import load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, build, load
from rag.service import index_config, ingest, make_retriever
from rag.settings import Settings
from tests.conftest import DEV
from tests.posts import write_post

DATA = Path(__file__).resolve().parents[2] / "data"
EDITED = "003_ea05dc3451fe564a.txt"  # its comment 2, which has replies, gets a word changed
REMOVED = "002_c9ebe3be5a93ccd6.txt"


@pytest.fixture(scope="module")
def base(model: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-post corpus and its full build, side by side: `data/` and `index/`."""
    root = tmp_path_factory.mktemp("base")
    (root / "data").mkdir()
    for name in (EDITED, REMOVED):
        shutil.copy(DATA / name, root / "data" / name)
    ingest(_settings(root), model)
    return root


def _settings(root: Path) -> Settings:
    return Settings(data_dir=root / "data", index_dir=root / "index", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def root(base: Path, tmp_path: Path) -> Path:
    """A private copy of the base corpus and index to change."""
    shutil.copytree(base, tmp_path / "root", symlinks=True)
    return tmp_path / "root"


def _assert_same_index(got: Index, want: Index) -> None:
    assert [c.to_dict() for c in got.chunks] == [c.to_dict() for c in want.chunks]
    assert got.dup_of == want.dup_of
    assert got.sentences == want.sentences
    assert got.documents == want.documents
    assert got.vectors.shape == want.vectors.shape
    assert np.abs(got.vectors - want.vectors).max() <= 1e-6
    assert np.abs(got.sentence_vectors - want.sentence_vectors).max() <= 1e-6


def test_incremental_ingest_equals_a_full_build_after_an_edit_an_addition_and_a_removal(
    root: Path, embedder: Embedder
) -> None:
    data = root / "data"
    edited = data / EDITED
    text = edited.read_text(encoding="utf-8")
    assert text.count("I'd dearly love") == 1
    edited.write_text(text.replace("I'd dearly love", "I'd truly love"), encoding="utf-8")
    (data / REMOVED).unlink()
    write_post(data, "005_new.txt", "the Restorative Horizons pilot")
    settings = _settings(root)

    incremental, _ = ingest(settings, embedder)
    full = build(load_corpus(data), embedder, index_config(settings))

    _assert_same_index(load(settings.index_dir), full)
    report = incremental.manifest["incremental"]
    assert 0 < report["encoded"] < report["reused"]
    assert report["encoded"] + report["reused"] == len(full.chunks) + len(full.sentences)
    changes = report["changes"]
    assert (changes["posts_added"], changes["posts_changed"], changes["posts_removed"]) == (1, 1, 1)
    # New: the edited comment and the new post's body, two comments and one reply.
    removed = load_corpus(DATA, [DATA / REMOVED]).documents[0]
    assert (changes["nodes_new"], changes["nodes_removed"]) == (1 + 4, len(removed.nodes))
    questions = load_questions(DEV)
    got = evaluate(make_retriever(settings, incremental, embedder), questions)
    want = evaluate(make_retriever(settings, full, embedder), questions)
    assert got.ranks == want.ranks and any(r is not None for r in got.ranks.values())


def test_incremental_ingest_of_an_unchanged_corpus_encodes_nothing(root: Path, embedder: Embedder) -> None:
    settings = _settings(root)
    before = load(settings.index_dir)
    index, _ = ingest(settings, embedder)
    assert index.manifest["incremental"]["encoded"] == 0
    assert index.manifest["incremental"]["base"] == before.manifest["build"]
    _assert_same_index(load(settings.index_dir), before)


def test_incremental_ingest_drops_a_removed_posts_chunks(root: Path, embedder: Embedder) -> None:
    settings = _settings(root)
    (root / "data" / REMOVED).unlink()
    index, _ = ingest(settings, embedder)
    gone = REMOVED.removesuffix(".txt")
    assert index.manifest["incremental"]["encoded"] == 0
    assert gone not in index.documents
    assert not [c for c in index.chunks if c.document_id == gone]
    assert not [s for s in index.sentences if s.document_id == gone]
    assert len(index.chunks) == index.chunk_search.ntotal


def test_full_ingest_reuses_nothing(root: Path, embedder: Embedder) -> None:
    (root / "data" / REMOVED).unlink()  # one post left: less to encode again
    index, _ = ingest(_settings(root), embedder, full=True)
    assert index.manifest["incremental"]["reused"] == 0
    assert index.manifest["incremental"]["base"] is None


def test_ingest_with_other_chunking_reuses_nothing(root: Path, embedder: Embedder) -> None:
    (root / "data" / REMOVED).unlink()
    settings = Settings(
        data_dir=root / "data", index_dir=root / "index", chunk_size=128, chunk_overlap=16, _env_file=None
    )  # type: ignore[call-arg]
    index, _ = ingest(settings, embedder)
    assert index.manifest["incremental"]["reused"] == 0
    assert index.manifest["incremental"]["encoded"] == len(index.chunks) + len(index.sentences)
