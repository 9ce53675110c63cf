"""Which post files of a data folder changed, and when they are still enough to ingest.

`watch_posts` yields the post files (``*.txt`` directly in the folder, not hidden) added, changed
or removed, from `watchfiles`: inotify on Linux, and polling where that is not available (a network
file system, some containers) or when asked (`RAG_WATCH_POLL`). Editors' swap, backup and temporary
files (``.post.txt.swp``, ``post.txt~``, ``4913``) are not post files, so they are never seen.

A file still being written must never be ingested half. No portable event says "closed after
writing", so a build is published only from files that held still: each one's size, modification
and change times and inode unchanged for `settle` seconds (a removed file counts as still). The
wait runs beside the work rather than before it: `PendingChanges.take` hands out changed files once
their changes pause for a moment (a burst of writes is one ingest); the ingest notes every post
file's signature and reads the folder at once, and before it saves, `StillFiles` waits out what is
left of `settle` since then and looks again. If a file it read has changed, the build is dropped
(`FilesChanged`: nothing saved) and the file taken again once it pauses. A post's ingest takes
longer than `settle`, so the wait usually costs nothing (when it came first, it was a fifth of the
time to find a new post). A file renamed into place whole (what editors, `rsync` and `cp` to a
temporary name then `mv` do) is published after one ingest; a writer that pauses longer than
`settle` in the middle of a file would have the part written so far published, and the whole once
it writes the rest, so write post files by renaming them into place.

Not here: what is done with the files (the server's ingest, `api.watcher`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from watchfiles import Change, watch

from rag.ingest.corpus import corpus_files, is_post_name
from rag.ingest.runs import Cancelled, FilesChanged

logger = logging.getLogger(__name__)

Signature = tuple[int, int, int, int] | None  # size, mtime_ns, ctime_ns, inode; None: no such file


def is_post_file(path: Path, data_dir: Path) -> bool:
    """A file `rag.ingest.corpus.corpus_files` reads: a post name in the folder itself."""
    return path.parent == data_dir and is_post_name(path.name)


def watch_posts(data_dir: Path, stop: threading.Event, poll: bool = False) -> Iterator[set[Path]]:
    """Sets of post files changed in `data_dir`, as they happen, until `stop` is set."""
    root = data_dir.resolve()

    def wanted(change: Change, path: str) -> bool:
        return is_post_file(Path(path), root)

    for changes in watch(
        root,
        watch_filter=wanted,
        stop_event=stop,
        force_polling=poll or None,  # None: watchfiles decides (it polls where inotify fails)
        poll_delay_ms=250,
        recursive=False,
        raise_interrupt=False,
        rust_timeout=1000,
    ):
        yield {Path(path) for _, path in changes}


def snapshot(data_dir: Path) -> dict[Path, Signature]:
    """The signature of every post file `rag.ingest.corpus.load_corpus` would read in `data_dir`."""
    return {path: _signature(path) for path in corpus_files(data_dir)}


class StillFiles:
    """The post files of a folder as an ingest reads them, and whether they held still: made just
    before the ingest reads the folder, checked after it read it and again before it saves."""

    def __init__(self, data_dir: Path, settle: float, stop: threading.Event) -> None:
        self.data_dir, self.settle, self.stop = data_dir, settle, stop
        self.seen = snapshot(data_dir)
        self.since = time.monotonic()

    def check_read(self) -> None:
        """Raise FilesChanged if a post file came, went or changed while the folder was read."""
        now = snapshot(self.data_dir)
        moved = {path for path in self.seen.keys() | now.keys() if self.seen.get(path) != now.get(path)}
        if moved:
            raise FilesChanged(moved)

    def check_held(self) -> None:
        """Once `settle` seconds have passed since the folder was read, raise FilesChanged if a file
        it read has changed since: otherwise each held still throughout, for a write moves a file's
        change time, which nothing can set back. Raises Cancelled once `stop` is set."""
        if self.stop.wait(max(0.0, self.since + self.settle - time.monotonic())):
            raise Cancelled("the server is shutting down")
        moved = {path for path, signature in self.seen.items() if _signature(path) != signature}
        if moved:
            raise FilesChanged(moved)


def _signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class PendingChanges:
    """Changed files not yet ingested: a watcher adds them, the ingest takes them once still."""

    def __init__(self) -> None:
        self._paths: set[Path] = set()
        self._due = False  # something to do: files changed, or a retry was asked for
        self._cond = threading.Condition()

    def add(self, paths: set[Path]) -> None:
        """Note changed files; an empty set asks for an ingest all the same (a retry, a first check)."""
        with self._cond:
            self._paths |= paths
            self._due = True
            self._cond.notify_all()

    def take(self, settle: float, stop: threading.Event, step: float = 0.1) -> set[Path] | None:
        """Wait for a change, then until every changed file has held still for `settle` seconds
        (files changing meanwhile join the wait), and return them; None once `stop` is set."""
        with self._cond:
            while not self._due:
                if stop.is_set():
                    return None
                self._cond.wait(step)
            paths = set(self._paths)
        seen = {p: _signature(p) for p in paths}
        still_since = time.monotonic()
        while True:
            if stop.wait(min(step, settle)):
                return None
            with self._cond:
                paths = set(self._paths)
            now = {p: _signature(p) for p in paths}
            if now != seen:
                seen, still_since = now, time.monotonic()
                continue
            if time.monotonic() - still_since >= settle:
                with self._cond:
                    if self._paths == paths:  # nothing new arrived since the last look
                        self._paths.clear()
                        self._due = False
                        return paths
