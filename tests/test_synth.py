"""`rag synth`: seeded synthetic archives in the blog's format that the real parser reads cleanly."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rag.cli import app
from rag.ingest.corpus import load_corpus
from rag.synth import SynthSpec, write_archive
from tests.conftest import DATA


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_synth_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    spec = SynthSpec(posts=12, comments=6, seed=7)
    write_archive(DATA, tmp_path / "a", spec)
    write_archive(DATA, tmp_path / "b", spec)
    write_archive(DATA, tmp_path / "c", SynthSpec(posts=12, comments=6, seed=8))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_synth_archive_parses_without_errors_or_warnings(tmp_path: Path) -> None:
    write_archive(DATA, tmp_path, SynthSpec(posts=40, comments=8, seed=1))
    corpus = load_corpus(tmp_path)
    assert len(corpus.documents) == 40
    assert corpus.errors == [] and corpus.warnings == []
    # Every declared count matches the tree read back, and the tree has both levels.
    assert all(d.declared_count == len(d.nodes) - 1 for d in corpus.documents)
    assert all(d.date and d.title for d in corpus.documents)
    assert sum(len(d.comments) for d in corpus.documents) > 40
    assert sum(len(d.replies) for d in corpus.documents) > 10


def test_synth_text_is_built_from_the_source_vocabulary(tmp_path: Path) -> None:
    write_archive(DATA, tmp_path, SynthSpec(posts=5, comments=4, seed=2))
    source_words = {w for p in DATA.glob("*.txt") for w in p.read_text(encoding="utf-8").split()}
    corpus = load_corpus(tmp_path)
    words = [w for d in corpus.documents for n in d.nodes[1:] for w in d.text(n).split()]
    assert words and sum(w in source_words for w in words) / len(words) > 0.95


def test_synth_posts_option_sets_the_count_and_no_comments_gives_bare_posts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["synth", str(tmp_path), "--posts", "3", "--comments", "0", "--source", str(DATA)]
    )
    assert result.exit_code == 0, result.output
    corpus = load_corpus(tmp_path)
    assert len(corpus.documents) == 3
    assert all(d.declared_count == 0 and len(d.nodes) == 1 for d in corpus.documents)
