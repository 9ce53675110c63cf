"""One ingest at a time per index folder: the lock names its holder, dies with it, and `rag ingest`
waits for it or gives up saying what holds it; the folder records how the last ingest ended."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag.errors import IngestLockedError
from rag.ingest.embedding import Embedder
from rag.ingest.index import current_build
from rag.ingest.runs import FilesChanged, ingest_lock, read_record, utc
from rag.service import ingest
from rag.settings import Settings
from tests.posts import post_text, write_post

RAG = str(Path(sys.executable).parent / "rag")


def test_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    with ingest_lock(tmp_path, "rag serve, watching its data folder") as first:
        assert first.try_acquire()
        other = ingest_lock(tmp_path, "rag ingest")
        assert not other.try_acquire()  # a second holder in the same process waits too
        holder = other.holder()
        assert holder is not None and holder.pid == os.getpid()
        with pytest.raises(IngestLockedError) as info:
            other.acquire(wait=0.2)
    message = info.value.message
    assert f"rag serve, watching its data folder (pid {os.getpid()}) since {utc(holder.since)}" in message
    assert "gave up after waiting 0.2 s" in message and "--wait" in message
    assert other.holder() is None, "a released lock names nobody"
    assert other.acquire(wait=0)
    other.release()


def test_lock_waits_for_its_holder_to_let_go(tmp_path: Path) -> None:
    first = ingest_lock(tmp_path, "first")
    assert first.try_acquire()
    told = []
    threading.Timer(0.5, first.release).start()
    second = ingest_lock(tmp_path, "second")
    assert second.acquire(wait=None, waiting=told.append)
    assert [h.what if h else None for h in told] == ["first"]
    second.release()


def test_lock_held_by_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from rag.ingest.runs import ingest_lock; "
            "ingest_lock(Path(sys.argv[1]), 'doomed').try_acquire(); "
            "print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    lock = ingest_lock(tmp_path, "next")
    assert not lock.try_acquire()
    assert lock.holder() is not None and lock.holder().what == "doomed"  # type: ignore[union-attr]
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert lock.acquire(wait=10), "the kernel dropped the dead holder's lock"
    lock.release()


@pytest.fixture
def copy(settings: Settings, index: object, tmp_path: Path) -> Settings:
    """A copy of the session's data and index, to ingest into."""
    shutil.copytree(settings.data_dir, tmp_path / "data")
    shutil.copytree(settings.index_dir, tmp_path / "index", symlinks=True)
    return Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "index", _env_file=None)  # type: ignore[call-arg]


def _env(s: Settings) -> dict[str, str]:
    return {**os.environ, "RAG_DATA_DIR": str(s.data_dir), "RAG_INDEX_DIR": str(s.index_dir)}


def test_rag_ingest_with_wait_0_gives_up_at_once_naming_the_holder_and_leaves_the_index(
    copy: Settings,
) -> None:
    before = current_build(copy.index_dir)
    with ingest_lock(copy.index_dir, "rag serve, watching its data folder") as held:
        assert held.try_acquire()
        run = subprocess.run([RAG, "ingest", "--wait", "0"], env=_env(copy), capture_output=True, text=True)
    assert run.returncode == 1
    said = " ".join(run.stderr.split())  # rich wraps long lines
    assert f"rag serve, watching its data folder (pid {os.getpid()}) since" in said
    assert "Traceback" not in run.stderr
    assert current_build(copy.index_dir) == before


def test_rag_ingest_waits_for_the_holder_then_ingests(copy: Settings) -> None:
    held = ingest_lock(copy.index_dir, "rag serve, watching its data folder")
    assert held.try_acquire()
    child = subprocess.Popen(
        [RAG, "ingest"], env=_env(copy), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stderr is not None
        waiting = child.stderr.readline()  # it says whom it waits for, then waits
        assert (
            f"waiting for the ingest lock: rag serve, watching its data folder (pid {os.getpid()})" in waiting
        )
        time.sleep(0.5)
        assert child.poll() is None, "it waits while the lock is held"
    finally:
        held.release()
    out, _ = child.communicate(timeout=600)
    assert child.returncode == 0
    assert "reused" in out
    record = read_record(copy.index_dir)
    assert record is not None and (record.by, record.outcome) == ("rag ingest", "ok")
    assert record.build == current_build(copy.index_dir)


def test_ingest_records_its_outcome_build_and_skipped_files_in_the_index_folder(
    copy: Settings, embedder: Embedder
) -> None:
    (copy.data_dir / "bad.txt").write_bytes(b"Friday 1 March 2019\n\nTitle\n\x00binary\n")
    index, _ = ingest(copy, embedder, by="a test")
    record = read_record(copy.index_dir)
    assert record is not None
    assert (record.by, record.outcome, record.build) == ("a test", "ok", index.manifest["build"])
    assert record.skipped == ["bad.txt:4: binary data (a NUL byte), not a post export"]
    assert (record.encoded, record.reused) == (0, index.manifest["incremental"]["reused"])
    assert record.finished >= record.started


class _WritesMeanwhile(Embedder):
    """The served model, and a writer that appends to a post file while the ingest encodes."""

    target: Path

    def encode(self, texts, batch_size: int = 64, threads: int | None = None):  # type: ignore[no-untyped-def]
        with self.target.open("a", encoding="utf-8") as fh:
            fh.write("\nAnonymous 1 April 2021 at 09:00:\n\nThe writer was not done yet.\n")
        return super().encode(texts, batch_size, threads)


def test_ingest_that_must_hold_still_saves_nothing_when_a_file_it_read_changes_before_then(
    copy: Settings, embedder: Embedder
) -> None:
    """The server's watch starts an ingest before a new file has held still; what it read must not
    be published if the file was still being written."""
    before, record = current_build(copy.index_dir), read_record(copy.index_dir)
    new = copy.data_dir / "005_half.txt"
    new.write_text(
        post_text("A Post Half Written", "Friday, 1 March 2019", ["A body."], []), encoding="utf-8"
    )
    writer = _WritesMeanwhile.from_loaded(embedder)
    writer.target = new
    with pytest.raises(FilesChanged) as caught:
        ingest(copy, writer, by="a test", still_for=0.2)
    assert caught.value.paths == {new} and "005_half.txt" in str(caught.value)
    assert current_build(copy.index_dir) == before and read_record(copy.index_dir) == record, "nothing saved"


def test_ingest_that_must_hold_still_waits_out_the_rest_of_that_time_then_saves(
    copy: Settings, embedder: Embedder
) -> None:
    write_post(copy.data_dir, "005_whole.txt", "Zephyrine Quillfeather scheme")
    started = time.monotonic()
    index, _ = ingest(copy, embedder, by="a test", still_for=1.5)
    assert time.monotonic() - started >= 1.5, "saved only once the files it read held still that long"
    assert current_build(copy.index_dir) == index.manifest["build"]
    assert "005_whole" in index.documents
