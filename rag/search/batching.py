"""Micro-batching of query encodes: queries that arrive together share one forward pass.

A caller that finds no pass running encodes at once, so a lone client waits for nothing. Callers
that arrive while a pass runs queue; when it ends, the oldest of them leads the next pass for up
to `max_batch` queued queries and the others wait for their vectors. A batch of 16 short queries
costs little more than one, so under load throughput grows with the number of clients, and only
one forward pass ever runs at a time: two at once would each ask torch for both cores.

When the pass that just ended was shared (load is present), the next leader first waits up to
`max_wait_ms` for more queries to arrive; after a lone pass it never waits.
Not here: caching vectors of repeated queries (the retriever's LRU cache sits in front of this).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
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

    def __init__(self, encode: Encode, max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False  # a leader owns the model (it is encoding or about to)
        self._shared = False  # the last pass served more than one caller
        self._forward = threading.Lock()  # one forward pass at a time, batched or not
        self.passes = 0  # forward passes run, and queries they served (for tests and figures)
        self.served = 0

    @property
    def queued(self) -> int:
        """Callers waiting for a pass."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No pass running or about to run."""
        return not self._busy

    def encode(self, text: str) -> np.ndarray:
        request = _Request(text)
        with self._lock:
            self._queue.append(request)
            lead = not self._busy
            self._busy = True
        if not lead:
            request.wake.wait()
        if request.lead or lead:
            self._lead(waited=not lead)
        if request.error is not None:
            raise request.error
        return cast(np.ndarray, request.vector)  # set by the pass that served this request

    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) in one pass of their own (a batch request), never beside another pass."""
        with self._forward:
            return self._encode(list(texts))

    def _lead(self, waited: bool) -> None:
        """Run one pass for the oldest queued requests, then hand the model to the next in line."""
        if waited and self._shared and self.max_wait > 0:
            deadline = time.perf_counter() + self.max_wait
            while len(self._queue) < self.max_batch and time.perf_counter() < deadline:
                time.sleep(0.0002)
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            with self._forward:
                vectors = self._encode([r.text for r in batch])
        except BaseException as exc:  # every caller of the failed pass gets its error
            for r in batch:
                r.error = exc
        else:
            for r, vector in zip(batch, vectors, strict=True):
                r.vector = vector.copy()  # its own array: a cached row must not pin the whole batch
        with self._lock:
            self.passes += 1
            self.served += len(batch)
            self._shared = len(batch) > 1
            following = self._queue[0] if self._queue else None
            if following is None:
                self._busy = False
            else:
                following.lead = True
        for r in batch:
            r.wake.set()
        if following is not None:
            following.wake.set()
