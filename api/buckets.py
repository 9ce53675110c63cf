"""Token buckets shared by the processes of one server, so `rag serve --workers N` keeps one rate.

`api.limits.TokenBuckets` keeps its buckets in a dict, which is right for one process: N workers
would each keep their own and let a client through at N times `RAG_RATE_LIMIT`. `SharedTokenBuckets`
keeps them in one SQLite database in the directory the server's processes share (api/workers.py),
and takes a token with one UPSERT statement. SQLite runs a statement as one transaction under its
write lock, so the refill, the check and the take are atomic across processes with no lock of our
own. The clock is `time.monotonic`, which on Linux is one clock for every process of the machine.

Why SQLite: the store must be atomic across processes and bounded, and cheap next to a search.
One take costs ~25 µs, ~55 µs while another process takes at once (`scripts/bench_buckets.py`,
on a loaded 2-core machine), against milliseconds for a search. A manager process would add an IPC
round trip per request and a process to supervise; a hand-written table in shared memory would be
faster still, but is a hash table with eviction and a cross-process lock to get right ourselves.
WAL mode lets readers and the writer overlap, and `synchronous=OFF` skips fsync: a worker that
crashes mid-write cannot damage the database (only a machine crash could, and the directory is made
afresh for each server anyway).

Rows of clients idle long enough to have filled up again are deleted now and then: a full bucket is
what a missing row means, so deleting one changes no answer, and the table holds only the clients
seen in the last `burst / rate` seconds (what the in-memory buckets bound by a count instead).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from api.limits import Buckets, TokenBuckets

logger = logging.getLogger(__name__)
DATABASE = "rate-limit.sqlite"  # in the server's shared directory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    client TEXT PRIMARY KEY,
    tokens REAL NOT NULL,   -- tokens left after the last request
    at REAL NOT NULL,       -- when that was (time.monotonic)
    granted INTEGER NOT NULL  -- whether the last request got a token
) WITHOUT ROWID
"""
# In DO UPDATE the columns are the row's old values: `refilled` is the bucket just before this request.
_REFILLED = "min(:burst, tokens + max(0.0, :now - at) * :rate)"
_TAKE = f"""
INSERT INTO buckets (client, tokens, at, granted) VALUES (:client, :burst - 1, :now, 1)
ON CONFLICT (client) DO UPDATE SET
    tokens = {_REFILLED} - ({_REFILLED} >= 1),
    granted = {_REFILLED} >= 1,
    at = :now
RETURNING tokens, granted
"""


class SharedTokenBuckets:
    """`TokenBuckets`' contract (one token a request, `rate` a second up to `burst`) over a SQLite
    file every process of the server opens."""

    def __init__(
        self, path: Path, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.clock = clock
        self._full_after = self.burst / rate  # seconds an empty bucket takes to fill
        self._swept = clock()
        # One connection per process, used by its event loop's thread only (whichever made it).
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(_SCHEMA)

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is back."""
        now = self.clock()
        params = {"client": client, "now": now, "rate": self.rate, "burst": self.burst}
        try:
            # fetchall: the statement runs to its end, so its transaction commits here and now
            ((tokens, granted),) = self._db.execute(_TAKE, params).fetchall()
            if now - self._swept > self._full_after:
                self._swept = now
                self._db.execute("DELETE FROM buckets WHERE at < ?", (now - self._full_after,))
        except sqlite3.Error:
            # A broken store must not refuse every request: let this one through and say so.
            logger.exception("the shared rate-limit store failed; request let through")
            return 0.0
        return 0.0 if granted else (1.0 - tokens) / self.rate


def token_buckets(rate: float, burst: float, shared_dir: Path | None) -> Buckets:
    """The buckets of this process alone, or of every process sharing `shared_dir`."""
    if shared_dir is None:
        return TokenBuckets(rate, burst)
    return SharedTokenBuckets(shared_dir / DATABASE, rate, burst)
