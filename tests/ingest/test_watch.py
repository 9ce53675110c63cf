"""Watching a data folder: only post files are seen (events or polling), and a changed file is
handed out only once it has held still."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.ingest.corpus import corpus_files
from rag.ingest.runs import Cancelled, FilesChanged
from rag.ingest.watch import PendingChanges, StillFiles, is_post_file, watch_posts


@pytest.mark.parametrize(
    ("name", "post"),
    [
        ("005_new.txt", True),
        (".005_new.txt.swp", False),  # vim's swap file
        ("005_new.txt~", False),  # a backup
        (".005_new.txt", False),  # hidden: a temporary name to rename from
        ("4913", False),  # vim's probe that the folder is writable
        ("005_new.txt.tmp", False),
        ("notes.md", False),
    ],
)
def test_is_post_file_takes_only_what_the_corpus_reads(tmp_path: Path, name: str, post: bool) -> None:
    assert is_post_file(tmp_path / name, tmp_path) is post
    assert not is_post_file(tmp_path / "sub" / "005_new.txt", tmp_path), "the corpus is not recursive"
    (tmp_path / name).write_text("a post", encoding="utf-8")
    assert (tmp_path / name in corpus_files(tmp_path)) is post, "the watch and the corpus agree"


@pytest.mark.parametrize("poll", [False, True], ids=["events", "polling"])
def test_watch_posts_reports_post_files_added_changed_and_removed_and_nothing_else(
    tmp_path: Path, poll: bool
) -> None:
    stop = threading.Event()
    seen: list[set[Path]] = []

    def collect() -> None:
        for changes in watch_posts(tmp_path, stop, poll):
            seen.append(changes)

    watcher = threading.Thread(target=collect, daemon=True)
    watcher.start()
    time.sleep(1.0)  # the watch is set up (polling takes a first look) before anything is written
    post = tmp_path / "005_new.txt"
    (tmp_path / ".005_new.txt.swp").write_text("swap", encoding="utf-8")
    (tmp_path / "005_new.txt~").write_text("backup", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "006.txt").write_text("nested", encoding="utf-8")
    post.write_text("a post", encoding="utf-8")
    _wait(lambda: post in set().union(*seen))
    post.unlink()
    count = len(seen)
    _wait(lambda: len(seen) > count)
    stop.set()
    watcher.join(timeout=30)
    assert set().union(*seen) == {post}
    assert not watcher.is_alive(), "the watch ends when told to stop"


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the watch did not report the change"
        time.sleep(0.05)


def test_pending_changes_hands_a_file_out_only_after_it_holds_still(tmp_path: Path) -> None:
    pending = PendingChanges()
    post = tmp_path / "005_new.txt"
    written: list[float] = []

    def write_slowly() -> None:
        with post.open("w", encoding="utf-8") as fh:
            for i in range(40):  # 2 s of writing, a piece every 50 ms: never still for a second
                fh.write(f"line {i}\n")
                fh.flush()
                written.append(time.monotonic())
                pending.add({post})
                time.sleep(0.05)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    while not written:
        time.sleep(0.01)
    taken = pending.take(settle=1.0, stop=threading.Event())
    handed_out = time.monotonic()
    writer.join()
    assert taken == {post}
    assert handed_out >= written[-1] + 1.0, "not before the last piece had held still for the settle time"
    assert post.read_text(encoding="utf-8").count("\n") == 40


def test_pending_changes_counts_a_removed_file_as_still_and_a_retry_as_a_change(tmp_path: Path) -> None:
    pending = PendingChanges()
    gone = tmp_path / "gone.txt"
    pending.add({gone})
    assert pending.take(settle=0.2, stop=threading.Event()) == {gone}
    pending.add(set())  # a retry: nothing changed, but an ingest is due
    assert pending.take(settle=0.2, stop=threading.Event()) == set()


def test_pending_changes_returns_none_once_stopped(tmp_path: Path) -> None:
    pending = PendingChanges()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert pending.take(settle=1.0, stop=stop) is None
    pending.add({tmp_path / "a.txt"})
    assert pending.take(settle=5.0, stop=stop) is None


def test_still_files_name_what_came_went_or_changed_and_wait_out_the_settle_time(tmp_path: Path) -> None:
    kept, gone, changed = (tmp_path / f"00{n}.txt" for n in range(3))
    for path in (kept, gone, changed):
        path.write_text("a post", encoding="utf-8")
    still = StillFiles(tmp_path, settle=0.5, stop=threading.Event())
    still.check_read()  # nothing moved yet
    gone.unlink()
    changed.write_text("a post, longer now", encoding="utf-8")
    came = tmp_path / "003.txt"
    came.write_text("a new post", encoding="utf-8")
    (tmp_path / ".004.txt.tmp").write_text("not a post file", encoding="utf-8")
    with pytest.raises(FilesChanged) as read:
        still.check_read()
    assert read.value.paths == {gone, changed, came}
    started = time.monotonic()
    with pytest.raises(FilesChanged) as held:
        still.check_held()
    assert held.value.paths == {gone, changed}, "a file that was not read is not the build's concern"
    assert time.monotonic() - started >= 0.4, "it first waits out the settle time"
    calm = StillFiles(tmp_path, settle=0.2, stop=threading.Event())
    calm.check_held()  # nothing changed: it returns once the time is up
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(Cancelled):
        StillFiles(tmp_path, settle=30, stop=stopped).check_held()
