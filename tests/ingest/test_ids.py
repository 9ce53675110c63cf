"""Passage ids are derived from content and location, never insertion order: they survive a
rebuild from the same text, the addition of a post (even one that sorts first), a change of file
order, and a save/load round trip; and only the passages whose text changed get new ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag.ingest.chunking import chunk_corpus
from rag.ingest.corpus import corpus_files, load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, IndexConfig, build, load, save
from tests.conftest import DATA

FILES = ("001_94ff703d48dd3443.txt", "003_ea05dc3451fe564a.txt")  # flattened and structured layouts
CONFIG = IndexConfig("bundled", 160, 32)
NEW_POST = (
    "Monday 1 March 2021\n\nA post added later\n\nThe newest post about probation pay and workloads.\n\n"
    "1 comment:\n\n  1. A comment on the new post.\n\n    ReplyDelete\n"
)


@pytest.fixture(scope="module")
def builds(model: Embedder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Index]:
    small = tmp_path_factory.mktemp("ids-small")
    for name in FILES:
        shutil.copy(DATA / name, small / name)
    grown = tmp_path_factory.mktemp("ids-grown")
    for name in FILES:
        shutil.copy(DATA / name, grown / name)
    (grown / "0000_new_post.txt").write_text(NEW_POST, encoding="utf-8")  # sorts before the others
    first = build(load_corpus(small), Embedder.from_loaded(model), CONFIG)
    index_dir = tmp_path_factory.mktemp("ids-index")
    save(first, index_dir)
    return {
        "first": first,
        "rebuilt": build(load_corpus(small), Embedder.from_loaded(model), CONFIG),
        "loaded": load(index_dir),
        "grown": build(load_corpus(grown), Embedder.from_loaded(model), CONFIG),
    }


def _ids(index: Index, exclude: str | None = None) -> list[str]:
    return [c.id for c in index.chunks if c.document_id != exclude]


def test_ids_survive_a_rebuild_from_the_same_text(builds: dict[str, Index]) -> None:
    assert _ids(builds["rebuilt"]) == _ids(builds["first"])
    assert len(set(_ids(builds["first"]))) == len(builds["first"].chunks)


def test_ids_survive_save_and_load(builds: dict[str, Index]) -> None:
    assert _ids(builds["loaded"]) == _ids(builds["first"])


def test_ids_survive_adding_a_post_that_sorts_first(builds: dict[str, Index]) -> None:
    first, grown = builds["first"], builds["grown"]
    assert _ids(grown, exclude="0000_new_post") == _ids(first)
    new = [c for c in grown.chunks if c.document_id == "0000_new_post"]
    assert new and not {c.id for c in new} & set(_ids(first))
    assert len(set(_ids(grown))) == len(grown.chunks)
    for chunk in first.chunks:  # the same id means the same passage at the same place
        again = grown.chunk(chunk.id)
        assert (again.text, again.source, again.start, again.end) == (
            chunk.text,
            chunk.source,
            chunk.start,
            chunk.end,
        )


def test_ids_do_not_depend_on_file_order() -> None:
    files = [DATA / name for name in FILES]
    forward = chunk_corpus(load_corpus(DATA, files).documents, 160, 32)
    backward = chunk_corpus(load_corpus(DATA, list(reversed(files))).documents, 160, 32)
    assert sorted(c.id for c in forward) == sorted(c.id for c in backward)


def test_ids_change_only_for_the_passage_whose_text_changed(tmp_path: Path) -> None:
    original = load_corpus(DATA, [DATA / FILES[1]]).documents[0]
    node = original.comments[2]
    raw = original.raw[: node.start] + "Edited: " + original.raw[node.start :]
    edited = tmp_path / FILES[1]
    edited.write_text(raw, encoding="utf-8")
    before = chunk_corpus([original], 160, 32)
    after = chunk_corpus(load_corpus(tmp_path, corpus_files(tmp_path)).documents, 160, 32)
    changed = {c.id for c in before} ^ {c.id for c in after}
    assert changed
    touched = [c for c in before + after if c.id in changed]
    assert all((c.kind, c.comment) == ("comment", node.comment) for c in touched)
