"""Micro-batching of query encodes: queries that arrive together share one forward pass.

A caller that finds no pass running encodes at once, so a lone client waits for nothing. Callers
that arrive while passes run queue; when a pass ends, the oldest of them leads the next pass for
up to `max_batch` queued queries and the others wait for their vectors. When the pass that just
ended was shared (load is present), the next leader first waits up to `max_wait_ms` for more
queries to arrive; after a lone pass it never waits.

Lanes. A lone query runs *wide*: torch splits each matrix product over every core, the lowest
latency for one caller. Under load that is the wrong trade on a small machine: a pass split over
both cores stalls whenever either core is taken by the event loop, a client or another process,
and its small products scale poorly (16 queries: 120 ms on one thread, 72 ms on two, here). So
given a `narrow` encode (one torch thread), passes started while another runs or for a queue are
narrow, and up to `lanes` of them run at once, one per core; a wide pass always runs alone. Which
passes run wide or narrow changes no vector beyond float rounding (the same products, blocked
differently).
Threads. Every pass runs on one of `lanes` threads of the batcher's own, never on the caller's.
Under load any request thread could otherwise lead a pass, and each that did kept memory sized for
a forward pass: glibc's allocator holds freed memory in the arena of the thread that freed it, and
MKL keeps packing buffers per thread, so a server's resident memory grew with every thread of its
pools that had ever encoded (a soak's curve kept climbing for 30 minutes). With the passes on
`lanes` threads, that memory is bounded by the lanes, whatever the number of request threads.

Background work. `background(texts)` runs a pass for work that must not delay searches (a server
ingesting new posts). It starts only when no query waits, no wide query pass or batch request runs
and a lane is free: wide when nothing else runs (the idle cores are its: one-thread parts side by
side, one a lane), narrow beside a running query. A query never waits for it: one arriving
meanwhile runs narrow on another lane, and every query queued when a pass ends is served before
the next background pass starts. (A query beside a wide background pass leaves one more thread
than cores busy for the rest of that pass; the caller keeps passes short and runs them at a lower
OS priority, so the query's thread wins the core.) It runs on the caller's thread, not a lane
thread, and the other parts of a wide pass on helper threads set to the caller's priority, so
that the caller's priority holds on every core it uses (the memory bound above grows by those
threads). Inside `background_work()`, a query that finds nothing running runs narrow too:
otherwise a steady client would start a wide pass in every gap between background passes, and the
work would wait behind each one and barely advance.

Not here: caching vectors of repeated queries (the retriever's LRU cache sits in front of this).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import numpy as np

Encode = Callable[[list[str]], np.ndarray]


@dataclass(eq=False)
class _Request:
    text: str
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set when this caller is to run the next pass
    vector: np.ndarray | None = None
    error: BaseException | None = None


class QueryBatcher:
    """`encode(text)` -> (dim,) vector, computed in a pass shared with concurrent callers."""

    def __init__(
        self,
        encode: Encode,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        narrow: Encode | None = None,
        lanes: int = 1,
    ) -> None:
        self._encode = encode
        self._narrow = narrow  # passes started under load run on it, when given
        self.lanes = max(1, lanes) if narrow is not None else 1
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._lock = threading.Condition()
        self._queue: list[_Request] = []
        self._running = 0  # passes running, or whose leader is chosen and about to run
        self._wide = False  # one of them is wide: nothing else may start beside it
        self._exclusive = 0  # batch requests waiting for every lane: no new pass starts
        self._shared = False  # the last pass served more than one caller
        self._background = 0  # background passes waiting for a lane
        self._background_work = 0  # callers inside background_work(): no pass starts wide
        self.passes = 0  # forward passes run, narrow ones, and queries served (tests, figures)
        self.narrow_passes = 0
        self.served = 0
        self.background_passes = 0
        # Where passes run: at most `lanes` at once (a wide one or a batch runs alone), made on use.
        self._threads = ThreadPoolExecutor(self.lanes, thread_name_prefix="query-encode")
        self._helpers: ThreadPoolExecutor | None = None  # a wide background pass's other parts

    @property
    def queued(self) -> int:
        """Callers waiting for a pass."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No pass running or about to run."""
        return self._running == 0

    def encode(self, text: str) -> np.ndarray:
        request = _Request(text)
        with self._lock:
            self._queue.append(request)
            wide = self._start(request)
        if wide is None:  # queued: a finished pass either served this request or made it lead
            request.wake.wait()
            if request.lead:
                self._lead(request, wide=self._narrow is None, waited=True)
        else:
            self._lead(request, wide=wide, waited=False)
        if request.error is not None:
            raise request.error
        return cast(np.ndarray, request.vector)  # set by the pass that served this request

    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) in one wide pass of its own (a batch request), never beside another.
        No new pass starts while it waits, so a stream of single queries cannot starve it."""
        with self._lock:
            self._exclusive += 1
            while self._running:
                self._lock.wait()
            self._exclusive -= 1
            self._running, self._wide = 1, True
        try:
            return self._threads.submit(self._encode, list(texts)).result()
        finally:
            with self._lock:
                self._running, self._wide = 0, False
                self._hand_off()

    def background(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) in one pass that yields to queries (see the module docstring): wide
        when nothing else runs, else narrow. Keep `texts` few: a query arriving meanwhile runs
        beside the pass, not before it."""
        with self._lock:
            self._background += 1
            # A timed wait: a pass ending notifies, and the timeout covers any hand-off that did not.
            while self._queue or self._exclusive or self._wide or self._running >= self.lanes:
                self._lock.wait(0.05)
            self._background -= 1
            wide = self._running == 0 or self._narrow is None
            self._running += 1
        try:
            if not wide:
                return cast(Encode, self._narrow)(list(texts))
            return self._encode(list(texts)) if self._narrow is None else self._spread(list(texts))
        finally:
            with self._lock:
                self.background_passes += 1
                self._running -= 1
                self._hand_off()

    def _spread(self, texts: list[str]) -> np.ndarray:
        """A wide background pass as one-thread parts, one a lane, side by side: the first on the
        caller's thread, the others on helper threads set to the caller's OS priority. A wide pass
        of the runtime would not do: ONNX Runtime's intra-op threads belong to its session, made at
        normal priority, so a query beside the pass lost half a core to it (one-thread query p50
        5 ms alone, 10 ms beside a wide pass, 6 ms beside these parts, whose throughput is the
        same: tried in one process on two cores)."""
        parts = [texts[i :: self.lanes] for i in range(self.lanes) if texts[i :: self.lanes]]
        if len(parts) < 2:
            return cast(Encode, self._narrow)(texts)
        if self._helpers is None:
            self._helpers = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="background-encode")
        priority = _priority()
        rest = [
            self._helpers.submit(_at_priority, priority, cast(Encode, self._narrow), part)
            for part in parts[1:]
        ]
        vectors = [cast(Encode, self._narrow)(parts[0]), *(f.result() for f in rest)]
        out = np.empty((len(texts), vectors[0].shape[1]), dtype=vectors[0].dtype)
        for i, part in enumerate(vectors):
            out[i :: self.lanes] = part
        return out

    @contextmanager
    def background_work(self) -> Iterator[None]:
        """While inside, queries run narrow even alone, leaving a lane to `background` passes."""
        with self._lock:
            self._background_work += 1
        try:
            yield
        finally:
            with self._lock:
                self._background_work -= 1

    def _start(self, request: _Request) -> bool | None:
        """Under the lock: whether an arriving caller leads a pass at once, wide (True) when
        nothing else runs or narrow (False) on a free lane beside others, or None: it queues."""
        if self._exclusive or self._wide:
            return None
        request.lead = True  # if it leads, no other pass takes it into its batch
        if self._running == 0 and not self._background_work:
            self._running, self._wide = 1, True
            return True
        if self._running < self.lanes:
            self._running += 1
            return False
        request.lead = False
        return None

    def _lead(self, request: _Request, wide: bool, waited: bool) -> None:
        """Run one pass for this leader and its share of the queued requests, then hand off."""
        if waited and self._shared and self.max_wait > 0:
            deadline = time.perf_counter() + self.max_wait
            while len(self._queue) < self.max_batch and time.perf_counter() < deadline:
                time.sleep(0.0002)
        with self._lock:
            self._queue.remove(request)
            # Requests chosen to lead passes of their own stay for them; the rest are shared
            # evenly among the leaders about to take theirs, so free lanes get equal batches.
            followers = [r for r in self._queue if not r.lead]
            leaders = 1 + sum(r.lead for r in self._queue)
            share = min(self.max_batch - 1, -(-len(followers) // leaders))
            batch = [request, *followers[:share]]
            taken = set(map(id, batch))
            self._queue = [r for r in self._queue if id(r) not in taken]
        encode = self._encode if wide or self._narrow is None else self._narrow
        try:
            vectors = self._threads.submit(encode, [r.text for r in batch]).result()
        except BaseException as exc:  # every caller of the failed pass gets its error
            for r in batch:
                r.error = exc
        else:
            for r, vector in zip(batch, vectors, strict=True):
                r.vector = vector.copy()  # its own array: a cached row must not pin the whole batch
        with self._lock:
            self.passes += 1
            self.narrow_passes += not wide
            self.served += len(batch)
            self._shared = len(batch) > 1
            self._running -= 1
            self._wide = self._wide and not wide
            self._hand_off()
        for r in batch[1:]:
            r.wake.set()

    def _hand_off(self) -> None:
        """Under the lock, after a pass: wake a batch request waiting for every lane, or else
        make the oldest queued callers lead passes on the free lanes (narrow when a narrow
        encode is given: a queue means load)."""
        if self._exclusive:
            self._lock.notify_all()
            return
        if self._wide:
            return
        for r in self._queue:
            if self._running >= self.lanes:
                break
            if r.lead:
                continue
            r.lead = True
            self._running += 1
            self._wide = self._narrow is None
            r.wake.set()
        if self._background:
            self._lock.notify_all()


def _priority() -> int | None:
    """The calling thread's OS priority (nice value), where a thread has its own (Linux)."""
    if sys.platform != "linux":
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(nice: int | None) -> None:
    """Lower the calling thread's OS priority to nice value `nice`, if it is higher now. Linux only:
    there a thread's nice value is its own; elsewhere it would be the whole process's. Raising
    one's nice value needs no privilege, lowering it again would, so a thread only ever goes lower.
    Raises OSError when the system refuses."""
    if nice is None or sys.platform != "linux":
        return
    me = threading.get_native_id()
    if os.getpriority(os.PRIO_PROCESS, me) < nice:
        os.setpriority(os.PRIO_PROCESS, me, nice)


def _at_priority(priority: int | None, encode: Encode, texts: list[str]) -> np.ndarray:
    """`encode(texts)` on this thread at `priority` or lower."""
    try:
        lower_thread_priority(priority)
    except OSError:
        pass  # it runs at the priority it has: slower searches beside it, never a failed ingest
    return encode(texts)
