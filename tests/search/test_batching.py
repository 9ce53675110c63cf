"""The query batcher with the real model: concurrent callers share passes and each gets its own
vector, a lone caller encodes at once, a failed pass reaches every caller of that pass, and passes
run on the batcher's own lane threads."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rag.ingest.embedding import Embedder
from rag.search.batching import QueryBatcher

QUERIES = [
    f"{topic} ({n})"
    for n in range(4)
    for topic in (
        "pay progression",
        "Serco contracts",
        "why are courts sentencing without pre-sentence reports?",
        "CRC staff morale",
    )
]


class Gate:
    """The real encoder behind a gate: the first pass waits until the test opens it, so callers
    that arrive meanwhile are known to queue behind a running pass."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.started = threading.Event()
        self.open = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.started.set()
        self.open.wait(timeout=60)
        return self.embedder.encode(texts)


def queued_behind_a_pass(
    batcher: QueryBatcher, started: threading.Event, release: threading.Event
) -> list[np.ndarray]:
    """Vectors for "first query" and then QUERIES, where every one of QUERIES is known to have
    queued while the first pass was held (until `started`, then all queued, then `release`)."""
    with ThreadPoolExecutor(max_workers=len(QUERIES) + 1) as pool:
        first = pool.submit(batcher.encode, "first query")
        assert started.wait(timeout=60)
        rest = [pool.submit(batcher.encode, q) for q in QUERIES]
        while batcher.queued < len(QUERIES):
            threading.Event().wait(0.001)
        release.set()
        return [first.result(timeout=60)] + [f.result(timeout=60) for f in rest]


def test_batcher_concurrent_callers_get_their_own_vectors(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder.encode, max_batch=32)
    with ThreadPoolExecutor(max_workers=16) as pool:
        vectors = list(pool.map(batcher.encode, QUERIES))
    for query, vector in zip(QUERIES, vectors, strict=True):
        alone = embedder.encode([query])[0]
        assert float(np.abs(vector - alone).max()) < 1e-5, query
    assert batcher.served == len(QUERIES)


def test_batcher_queries_arriving_during_a_pass_share_the_next_one(embedder: Embedder) -> None:
    gate = Gate(embedder)
    batcher = QueryBatcher(gate, max_batch=32, max_wait_ms=0)
    results = queued_behind_a_pass(batcher, gate.started, gate.open)
    assert gate.batches[0] == ["first query"]
    assert sorted(gate.batches[1]) == sorted(QUERIES)  # one pass for all that queued
    assert batcher.passes == 2
    for query, vector in zip(["first query", *QUERIES], results, strict=True):
        assert float(np.abs(vector - embedder.encode([query])[0]).max()) < 1e-5


def test_batcher_bounds_a_pass_to_max_batch(embedder: Embedder) -> None:
    gate = Gate(embedder)
    batcher = QueryBatcher(gate, max_batch=4, max_wait_ms=0)
    assert all(v is not None for v in queued_behind_a_pass(batcher, gate.started, gate.open))
    assert [len(b) for b in gate.batches] == [1, 4, 4, 4, 4]


def test_batcher_lone_caller_encodes_at_once(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder.encode, max_wait_ms=10_000)  # a wait this long would show as a hang
    for query in QUERIES[:3]:
        vector = batcher.encode(query)
        assert float(np.abs(vector - embedder.encode([query])[0]).max()) < 1e-5
    assert (batcher.passes, batcher.served) == (3, 3)


def test_batcher_runs_every_pass_on_its_own_lane_threads_whatever_thread_calls(embedder: Embedder) -> None:
    """However many request threads call, passes run on at most `lanes` threads of the batcher's:
    the memory a forward pass leaves with its thread (allocator arenas, MKL buffers) stays bounded."""
    threads: set[str] = set()

    def encode(texts: list[str]) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return embedder.encode(texts, threads=1)

    batcher = QueryBatcher(encode, narrow=encode, lanes=2)
    with ThreadPoolExecutor(max_workers=24, thread_name_prefix="request") as pool:
        vectors = list(pool.map(batcher.encode, QUERIES * 3))
    batcher.encode_many(QUERIES[:4])
    batcher.encode("a lone caller")
    assert len(vectors) == len(QUERIES) * 3
    assert 1 <= len(threads) <= 2 and all(name.startswith("query-encode") for name in threads), threads


def test_batcher_error_reaches_every_caller_of_the_batch_and_it_keeps_working(embedder: Embedder) -> None:
    gate = Gate(embedder)
    failing = {"boom"}

    def encode(texts: list[str]) -> np.ndarray:
        vectors = gate(texts)
        if failing & set(texts):
            raise RuntimeError("forward pass failed")
        return vectors

    batcher = QueryBatcher(encode, max_batch=32, max_wait_ms=0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(batcher.encode, "first query")
        assert gate.started.wait(timeout=60)
        doomed = [pool.submit(batcher.encode, q) for q in ["boom", "pay progression", "Serco contracts"]]
        while batcher.queued < 3:
            threading.Event().wait(0.001)
        gate.open.set()
        assert first.result(timeout=60) is not None
        for future in doomed:
            with pytest.raises(RuntimeError, match="forward pass failed"):
                future.result(timeout=60)
    vector = batcher.encode("pay progression")  # the batcher still serves afterwards
    assert float(np.abs(vector - embedder.encode(["pay progression"])[0]).max()) < 1e-5
    assert batcher.idle


def test_batcher_encode_many_matches_single_encodes(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder.encode)
    vectors = batcher.encode_many(QUERIES)
    for query, vector in zip(QUERIES, vectors, strict=True):
        assert float(np.abs(vector - embedder.encode([query])[0]).max()) < 1e-5


class Lanes:
    """Wide and narrow encodes that record each pass and how many ran at once."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.passes: list[tuple[str, int]] = []
        self.threads: list[tuple[str, int]] = []  # each pass's thread: name, OS priority (nice)
        self.crowded_wide = 0  # wide passes that started beside another pass
        self.wide_started = threading.Event()
        self.open = threading.Event()

    def _run(self, kind: str, texts: list[str]) -> np.ndarray:
        # A wide background pass runs as parts, one a lane: its helpers' parts are that one pass.
        part = threading.current_thread().name.startswith("background-encode")
        with self.lock:
            self.running += not part
            self.most = max(self.most, self.running)
            self.passes.append((kind, len(texts)))
            self.threads.append(
                (threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            )
            self.crowded_wide += kind == "wide" and self.running > 1
        try:
            if kind == "wide":
                self.wide_started.set()
                self.open.wait(timeout=60)
            else:
                threading.Event().wait(0.02)  # long enough for the other lane's pass to overlap
            return self.embedder.encode(texts)
        finally:
            with self.lock:
                self.running -= not part

    def wide(self, texts: list[str]) -> np.ndarray:
        return self._run("wide", texts)

    def narrow(self, texts: list[str]) -> np.ndarray:
        return self._run("narrow", texts)


def test_batcher_lone_caller_runs_wide_and_callers_queued_behind_it_split_over_narrow_lanes(
    embedder: Embedder,
) -> None:
    lanes = Lanes(embedder)
    batcher = QueryBatcher(lanes.wide, max_wait_ms=0, narrow=lanes.narrow, lanes=2)
    results = queued_behind_a_pass(batcher, lanes.wide_started, lanes.open)
    assert lanes.passes[0] == ("wide", 1)
    # the 16 that queued behind the wide pass: two narrow passes of 8, one per lane, at once
    assert sorted(lanes.passes[1:]) == [("narrow", 8), ("narrow", 8)]
    assert lanes.most == 2
    for query, vector in zip(["first query", *QUERIES], results, strict=True):
        assert float(np.abs(vector - embedder.encode([query])[0]).max()) < 1e-5
    assert batcher.idle and batcher.narrow_passes == 2


def test_batcher_never_runs_more_passes_than_lanes_and_every_caller_gets_its_vector(
    embedder: Embedder,
) -> None:
    lanes = Lanes(embedder)
    lanes.open.set()
    batcher = QueryBatcher(lanes.wide, max_batch=4, narrow=lanes.narrow, lanes=2)
    queries = QUERIES * 3
    with ThreadPoolExecutor(max_workers=24) as pool:
        vectors = list(pool.map(batcher.encode, queries))
    assert lanes.most <= 2
    assert all(n <= 4 for _, n in lanes.passes)
    assert lanes.crowded_wide == 0  # a wide pass only ever ran alone
    assert batcher.served == len(queries) and batcher.idle
    for query, vector in zip(queries, vectors, strict=True):
        assert float(np.abs(vector - embedder.encode([query])[0]).max()) < 1e-5


def test_batcher_batch_request_waits_for_the_lanes_and_holds_new_passes_back(embedder: Embedder) -> None:
    lanes = Lanes(embedder)
    batcher = QueryBatcher(lanes.wide, max_wait_ms=0, narrow=lanes.narrow, lanes=2)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(batcher.encode, "first query")
        assert lanes.wide_started.wait(timeout=60)
        many = pool.submit(batcher.encode_many, QUERIES[:4])
        while not batcher._exclusive:  # the batch request waits for the running pass
            threading.Event().wait(0.001)
        later = pool.submit(batcher.encode, "a later query")
        while batcher.queued < 1:  # which queues behind the waiting batch request
            threading.Event().wait(0.001)
        lanes.open.set()
        first.result(timeout=60)
        assert many.result(timeout=60).shape == (4, embedder.dim)
        later.result(timeout=60)
    assert lanes.most == 1
    # the later query waited for the batch request, then ran as load (a queue) on a lane
    assert [kind for kind, _ in lanes.passes] == ["wide", "wide", "narrow"]


def test_batcher_background_pass_waits_for_a_wide_pass_then_spreads_over_every_lane_when_alone(
    embedder: Embedder,
) -> None:
    lanes = Lanes(embedder)
    batcher = QueryBatcher(lanes.wide, max_wait_ms=0, narrow=lanes.narrow, lanes=2)
    texts = ["a passage the server ingests", "and another one", "and a third, longer than the others"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(batcher.encode, "first query")
        assert lanes.wide_started.wait(timeout=60)
        background = pool.submit(batcher.background, texts)
        threading.Event().wait(0.2)
        assert not background.done() and len(lanes.passes) == 1, "it never starts beside a wide pass"
        lanes.open.set()
        first.result(timeout=60)
        vectors = background.result(timeout=60)
    assert lanes.passes[0] == ("wide", 1)
    assert sorted(lanes.passes[1:]) == [("narrow", 1), ("narrow", 2)], "one-thread parts, one a lane"
    assert float(np.abs(vectors - embedder.encode(texts)).max()) < 1e-5, "each text keeps its own vector"
    assert batcher.background_passes == 1 and batcher.passes == 1, "background passes are not query passes"


def test_batcher_background_parts_run_at_the_priority_of_the_thread_that_asked(embedder: Embedder) -> None:
    """The ingest thread runs at a lower OS priority so searches win the cores; the helper threads
    that run the other parts of its passes must not run at a higher one."""
    lanes = Lanes(embedder)
    lanes.open.set()
    batcher = QueryBatcher(lanes.wide, max_wait_ms=0, narrow=lanes.narrow, lanes=2)

    def ingest() -> np.ndarray:
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + 3)
        return batcher.background(["a passage the server ingests", "and another one"])

    with ThreadPoolExecutor(max_workers=1) as pool:
        vectors = pool.submit(ingest).result(timeout=60)
    assert vectors.shape == (2, embedder.dim)
    names = [name for name, _ in lanes.threads]
    assert len(names) == 2 and sum(name.startswith("background-encode") for name in names) == 1
    caller, helper = sorted(lanes.threads, key=lambda t: t[0].startswith("background-encode"))
    assert helper[1] >= caller[1] == os.getpriority(os.PRIO_PROCESS, 0) + 3


def test_batcher_queries_during_background_work_run_narrow_and_background_passes_start_wide_only_alone(
    embedder: Embedder,
) -> None:
    lanes = Lanes(embedder)
    lanes.open.set()
    batcher = QueryBatcher(lanes.wide, max_wait_ms=0, narrow=lanes.narrow, lanes=2)
    done = threading.Event()

    def ingest() -> int:
        passes = 0
        with batcher.background_work():
            while not done.is_set():
                # Four texts: a wide pass's parts hold two each, told apart from the one-query passes.
                batcher.background(["a passage the server ingests", "and another", "a third", "a fourth"])
                passes += 1
        return passes

    with ThreadPoolExecutor(max_workers=2) as pool:
        ingesting = pool.submit(ingest)
        while batcher.background_passes == 0:
            threading.Event().wait(0.001)
        vectors = [batcher.encode(q) for q in QUERIES[:6]]  # one client, one query at a time
        done.set()
        assert ingesting.result(timeout=60) > 0
    assert [kind for kind, n in lanes.passes if n == 1] == ["narrow"] * 6, "no query ran wide meanwhile"
    assert lanes.most <= 2 and lanes.crowded_wide == 0, "a wide background pass starts only alone"
    assert batcher.narrow_passes == 6 and batcher.idle
    for query, vector in zip(QUERIES[:6], vectors, strict=True):
        assert float(np.abs(vector - embedder.encode([query])[0]).max()) < 1e-5
    alone = batcher.encode("after the ingest")  # a lone query runs wide again
    assert lanes.passes[-1] == ("wide", 1) and alone.shape == (embedder.dim,)
