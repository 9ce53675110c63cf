"""One ingest at a time per index folder, and a record of how the last one ended.

`rag ingest` and a server ingesting its own data folder write builds into the same `index/`. Each
build goes to a folder of its own and `current` is swapped with one rename (`rag.ingest.index`), so
two at once could not leave a half index, but they would race: each reuses the vectors `current`
held when it started, and the later swap wins even when it indexed an older corpus. So an ingest
holds ``index/ingest.lock`` from parsing the corpus to swapping `current`. It is an flock(2) lock:
the kernel drops it when its process dies, so a killed ingest never leaves it stale. The holder
writes who it is into the file (what it is, its pid, since when), so whoever must wait for it, or
give up, can say what holds it.

``index/watch.lock`` elects the one process that watches the data folder (`rag serve --workers N`
starts N servers over one index): the same kind of lock, only ever tried, never waited for.

``index/last_ingest.json`` records how the last ingest into the folder ended, whoever ran it (a
server reports it on /readyz and /metrics). It is written with a rename, so it is never read half.

Not here: what an ingest does (`rag.service.ingest`), or watching files (`rag.ingest.watch`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag.errors import IngestLockedError

logger = logging.getLogger(__name__)

INGEST_LOCK = "ingest.lock"
WATCH_LOCK = "watch.lock"
RECORD = "last_ingest.json"


class Cancelled(Exception):
    """An ingest stopped before it saved anything: the server running it is shutting down."""


class FilesChanged(Cancelled):
    """An ingest stopped before it saved anything: post files it read changed before they had held
    still long enough (a file still being written), so it would have published part of one."""

    def __init__(self, paths: set[Path]) -> None:
        self.paths = paths
        super().__init__("changed while being read: " + ", ".join(sorted(p.name for p in paths)))


def utc(seconds: float) -> str:
    """A Unix time as the ISO 8601 UTC string the API and the logs show."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as it wrote itself into the lock file."""

    what: str  # "rag ingest", "rag serve (ingesting data/)"
    pid: int
    since: float  # Unix time it took the lock

    def __str__(self) -> str:
        return f"{self.what} (pid {self.pid}) since {utc(self.since)}"


class FolderLock:
    """An exclusive flock(2) on a file, with its holder named inside it. Not reentrant: a second
    `FolderLock` on the same file, even in the same process, waits for the first."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> Holder | None:
        """Who holds the lock now, if it has said (None: free, or just taken and not yet named)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "null")
            return Holder(str(data["what"]), int(data["pid"]), float(data["since"])) if data else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this object now holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        me = json.dumps(asdict(Holder(self.what, os.getpid(), time.time())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode("utf-8"), 0)
        self._fd = fd
        return True

    def acquire(
        self,
        wait: float | None,
        stop: threading.Event | None = None,
        waiting: Callable[[Holder | None], None] | None = None,
    ) -> bool:
        """Take the lock, waiting up to `wait` seconds for it (None: as long as it takes), then
        raising IngestLockedError naming the holder. `waiting` is told once who holds it when the
        lock is not free at once. Returns False only when `stop` is set while waiting."""
        deadline = None if wait is None else time.monotonic() + wait
        told = False
        while not self.try_acquire():
            holder = self.holder()
            if deadline is not None and time.monotonic() >= deadline:
                raise IngestLockedError(_locked_message(self.path, holder, wait or 0.0))
            if waiting is not None and not told:
                waiting(holder)
                told = True
            if stop is not None and stop.wait(0.1):
                return False
            if stop is None:
                time.sleep(0.1)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it: a reader must not name a holder that left
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _locked_message(path: Path, holder: Holder | None, waited: float) -> str:
    who = str(holder) if holder is not None else "another process"
    waited_for = f" after waiting {waited:g} s" if waited else ""
    return (
        f"another ingest is writing {path.parent}/: {who} holds {path.name}; gave up{waited_for}. "
        "Run it again when that one ends (`rag ingest --wait SECONDS` waits longer)."
    )


def ingest_lock(index_dir: Path, what: str) -> FolderLock:
    """The lock every ingest into `index_dir` holds from parsing the corpus to swapping `current`."""
    return FolderLock(index_dir / INGEST_LOCK, what)


def watch_lock(index_dir: Path, what: str) -> FolderLock:
    """The lock held by the one process that watches the data folder of `index_dir`'s index."""
    return FolderLock(index_dir / WATCH_LOCK, what)


@dataclass
class IngestRecord:
    """How an ingest ended: the index folder keeps the last one (`last_ingest.json`)."""

    by: str  # the lock holder's name: "rag ingest", "rag serve (ingesting data/)"
    started: float  # Unix times
    finished: float
    outcome: Literal["ok", "failed"]
    build: str | None = None  # the build it wrote, when it did
    encoded: int | None = None  # texts encoded, and taken from the previous build
    reused: int | None = None
    skipped: list[str] = field(default_factory=list)  # bad post files, "file:line: reason"
    error: str | None = None  # why it failed

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def to_json(self) -> dict[str, Any]:
        """As /readyz shows it: times in UTC, and the duration."""
        return {
            **asdict(self),
            "started": utc(self.started),
            "finished": utc(self.finished),
            "seconds": round(self.seconds, 3),
        }


def write_record(index_dir: Path, record: IngestRecord) -> None:
    """Keep `record` as the folder's last ingest; a failure to write it is logged, never raised
    (the ingest it describes has already succeeded or failed for reasons of its own)."""
    path = index_dir / RECORD
    tmp = path.with_name(f".{RECORD}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not record the ingest in %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def read_record(index_dir: Path) -> IngestRecord | None:
    """The folder's last ingest, or None when none was recorded (or the record is unreadable)."""
    try:
        data = json.loads((index_dir / RECORD).read_text(encoding="utf-8"))
        return IngestRecord(**data)
    except (OSError, ValueError, TypeError):
        return None
