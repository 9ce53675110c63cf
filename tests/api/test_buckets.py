"""api/buckets.py: where the rate limit's token buckets live. The shared SQLite buckets keep the
in-memory buckets' contract, and keep it across processes: two processes taking from one client's
bucket at once get one burst between them, not one each."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from api.buckets import SharedTokenBuckets
from api.limits import Buckets, TokenBuckets
from tests.conftest import ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("shared", [False, True], ids=["in-memory", "shared"])
def test_token_bucket_bursts_twice_the_rate_then_refills(tmp_path: Path, shared: bool) -> None:
    clock = Clock()
    buckets: Buckets = (
        SharedTokenBuckets(tmp_path / "buckets.sqlite", rate=5, burst=10, clock=clock)
        if shared
        else TokenBuckets(rate=5, burst=10, clock=clock)
    )
    assert [buckets.take("a") for _ in range(10)] == [0.0] * 10
    assert buckets.take("a") == pytest.approx(0.2)  # one token back in 1/5 s
    assert buckets.take("b") == 0.0  # another client has its own bucket
    clock.now += 1.0
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5 and buckets.take("a") > 0


# Each process: open the buckets with the clock stopped (so no token comes back), wait for the
# word, then take 200 tokens from one client's bucket and print how many it got.
TAKER = """
import sys
from pathlib import Path
from api.buckets import SharedTokenBuckets
buckets = SharedTokenBuckets(Path(sys.argv[1]), rate=5, burst=10, clock=lambda: 100.0)
sys.stdin.readline()
print(sum(buckets.take("addr:203.0.113.7") == 0.0 for _ in range(200)), flush=True)
"""


def test_shared_buckets_two_processes_taking_at_once_get_one_burst_between_them(tmp_path: Path) -> None:
    path = tmp_path / "buckets.sqlite"
    SharedTokenBuckets(path, rate=5, burst=10)  # the database exists before either opens it
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for taker in takers:  # both are ready and waiting (or reading the word) before either takes
        assert taker.stdin is not None
        taker.stdin.write("go\n")
        taker.stdin.flush()
    granted = [int(taker.communicate(timeout=120)[0]) for taker in takers]
    assert sum(granted) == 10  # the burst, once


def test_shared_buckets_forget_only_clients_whose_bucket_is_full_again(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "buckets.sqlite"
    buckets = SharedTokenBuckets(path, rate=5, burst=10, clock=clock)  # full again 2 s after emptied
    for _ in range(10):
        buckets.take("a")  # empty at 100.0
    clock.now = 101.0
    buckets.take("b")
    clock.now = 102.5  # a is full again (2.5 s at 5 a second), b is not: the sweep drops a alone
    buckets.take("c")
    with sqlite3.connect(path) as db:
        assert sorted(row[0] for row in db.execute("SELECT client FROM buckets")) == ["b", "c"]
    assert [buckets.take("a") for _ in range(10)] == [0.0] * 10  # what a kept row would have given
