"""Which post files of a data folder changed, and when they are still enough to ingest.

`watch_posts` yields the post files (``*.txt`` directly in the folder, not hidden) added, changed
or removed, from `watchfiles`: inotify on Linux, and polling where that is not available (a network
file system, some containers) or when asked (`RAG_WATCH_POLL`). Editors' swap, backup and temporary
files (``.post.txt.swp``, ``post.txt~``, ``4913``) are not post files, so they are never seen.

A file still being written must never be ingested half. No portable event says "closed after
writing", so `PendingChanges.take` hands out changed files only once they have held still: each
one's size, modification and change times and inode unchanged for `settle` seconds (a removed file
counts as still). A file renamed into place whole (what editors, `rsync` and `cp` to a temporary
name then `mv` do) is taken after one settle interval; a writer that pauses longer than that in the
middle of a file would have the part written so far taken, and the whole taken again once it writes
the rest, so write post files by renaming them into place.

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

logger = logging.getLogger(__name__)

Signature = tuple[int, int, int, int] | None  # size, mtime_ns, ctime_ns, inode; None: no such file


def is_post_file(path: Path, data_dir: Path) -> bool:
    """A name `rag.ingest.corpus.corpus_files` reads: ``*.txt`` in the folder itself, not hidden."""
    return path.parent == data_dir and path.suffix == ".txt" and not path.name.startswith(".")


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
