"""Prometheus metrics at GET /metrics, with the standard client library.

Each app has its own registry (not the library's global one), so several apps in one process (the
tests build many) never collide and each reports only its own traffic. What is measured:

- ``rag_http_requests_total{method,route,status}`` and ``rag_http_request_duration_seconds{route}``:
  by route template (``/v1/passages/{passage_id}``, not each id), so the label set stays small;
  a path no route matches is ``unmatched``.
- ``rag_http_errors_total{code}``: error responses by the JSON error code they carried.
- ``rag_index_documents``, ``rag_index_chunks``, ``rag_index_info{version,build}`` (the corpus
  fingerprint and the build folder served), ``rag_index_ready``.
- ``rag_expensive_in_flight`` / ``rag_expensive_waiting`` / ``rag_expensive_slots``: asks and
  batches running and queued, and the slots for them.
- ``rag_model_encode_seconds`` (count and sum): the embedding model's encode calls, queries while
  serving and the passages of the server's own ingest.
- ``rag_query_passes_total{lane}`` and ``rag_query_encodes_total``: forward passes the query batcher
  ran, wide (alone, every core) or narrow (one core, beside others), and the queries they served
  (their ratio is the mean batch); ``lane="ingest"`` counts the server's own ingest's passes.
- ``rag_ingest_watching``, ``rag_ingest_running`` and ``rag_ingest_total{outcome}``: the server's
  watch of its data folder and its own ingests (api/watcher.py; ``restarted``: a build dropped
  because a file it read was still being written); ``rag_ingest_last_timestamp_seconds``,
  ``rag_ingest_last_success`` and ``rag_ingest_last_duration_seconds``: the last ingest into the
  index folder, by the server or `rag ingest` (``index/last_ingest.json``).

Under `rag serve --workers N` each worker is a process of its own, and /metrics must report the
server, whichever worker answers the scrape. prometheus_client's multiprocess mode does that: with
``PROMETHEUS_MULTIPROC_DIR`` set (api/workers.py sets it, to a fresh directory per server) every
metric writes its values to a file per process there, and a scrape reads them all back. Counters and
histograms are summed over every worker that ever ran (a restarted worker's counts stay, so
Prometheus sees no reset); each gauge says how to merge live workers: ``rag_index_ready`` is the
least (the server is ready when every worker is), the index sizes and version the most, the
expensive-request gauges the sum, the watch and a running ingest the most (one worker watches),
and the last ingest's figures the most recent.

What the server holds (the index, the model's and the batcher's totals, the slots) is copied into
these metrics by `Metrics.sync`: at each scrape, and under `--workers` once a second in each worker,
so a scrape answered by one worker sees the others as of at most a second ago.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from api.deps import AppState, Serving
from api.limits import Slots

# Seconds: searches take milliseconds, answers up to the LLM timeout.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SYNC_SECONDS = 1.0  # how often each worker copies its state into the shared files
_Merge = Literal["livemin", "livemax", "livesum", "livemostrecent"]


def multiprocess() -> bool:
    """Whether prometheus_client writes to shared files (it decides when first imported, from this
    same variable)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


class _Totals:
    """How much of a running total (a counter the library keeps) the metrics have been told of."""

    def __init__(self) -> None:
        self.source: object = None
        self.seen: tuple[float, ...] = ()

    def delta(self, source: object, now: tuple[float, ...]) -> tuple[float, ...]:
        """What `now` adds to what was seen; all of it when `source` is new (a new index's batcher)."""
        if source is not self.source:
            self.source, self.seen = source, tuple(0.0 for _ in now)
        grown = tuple(n - s for n, s in zip(now, self.seen, strict=True))
        self.seen = now
        return grown


class Metrics:
    """The app's metrics: the request metrics the telemetry middleware records, and those `sync`
    copies from what the server holds."""

    def __init__(self, state: AppState, slots: Slots) -> None:
        self.state = state
        self.slots = slots
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rag_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "rag_http_request_duration_seconds",
            "Time from request to the end of the response.",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.errors = Counter("rag_http_errors", "Error responses by error code.", ["code"], registry=r)
        # How a gauge merges over live workers (the module docstring): least, most or summed.
        self.ready = self._gauge("rag_index_ready", "1 once a query can be answered.", "livemin")
        self.documents = self._gauge("rag_index_documents", "Documents in the index.", "livemax")
        self.chunks = self._gauge("rag_index_chunks", "Chunks in the index.", "livemax")
        self.info = self._gauge(
            "rag_index_info",
            "The index being served: its corpus fingerprint (version) and build folder.",
            "livemax",
            ["version", "build"],
        )
        self.encode = Summary(
            "rag_model_encode_seconds",
            "Time the embedding model spent encoding (queries, and the server's own ingest).",
            registry=r,
        )
        self.passes = Counter(
            "rag_query_passes", "Query forward passes run, by lane kind.", ["lane"], registry=r
        )
        self.encodes = Counter("rag_query_encodes", "Queries encoded by those passes.", registry=r)
        self.in_flight = self._gauge(
            "rag_expensive_in_flight", "Asks, chat completions and batches running.", "livesum"
        )
        self.waiting = self._gauge(
            "rag_expensive_waiting", "Expensive requests queued for a slot.", "livesum"
        )
        self.slot_count = self._gauge("rag_expensive_slots", "Slots for expensive requests.", "livesum")
        self.watching = self._gauge(
            "rag_ingest_watching", "1 while the server watches its data folder.", "livemax"
        )
        self.ingesting = self._gauge("rag_ingest_running", "1 while the server ingests.", "livemax")
        self.ingests = Counter("rag_ingest", "Ingests the server ran, by outcome.", ["outcome"], registry=r)
        self.last_ingest = self._gauge(
            "rag_ingest_last_timestamp_seconds",
            "When the last ingest into the index folder (by anyone) ended, Unix time.",
            "livemostrecent",
        )
        self.last_success = self._gauge(
            "rag_ingest_last_success", "1 if that ingest succeeded, 0 if it failed.", "livemostrecent"
        )
        self.last_seconds = self._gauge(
            "rag_ingest_last_duration_seconds", "How long that ingest took.", "livemostrecent"
        )
        self.exposed = r
        if multiprocess():  # the scrape reads every worker's files, this one's included
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()  # sync runs on the event loop and on the sync thread
        self._serving: Serving | None = None
        self._version: tuple[str, str] | None = None
        self._encoded = _Totals()
        self._passed = _Totals()
        self._ingested = _Totals()

    def _gauge(self, name: str, documentation: str, mode: _Merge, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry, multiprocess_mode=mode)

    def observe(self, method: str, route: str, status: int, seconds: float, error_code: str | None) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if error_code is not None:
            self.errors.labels(error_code).inc()

    def sync(self) -> None:
        """Copy what the server holds now into the metrics (see the module docstring)."""
        with self._lock:
            serving = self.state.serving  # read once: a new index may be swapped in meanwhile
            if serving is not self._serving:
                self._serving = serving
                self._show_index(serving)
            if serving is not None:
                retriever = serving.retriever
                stats = retriever.embedder.stats
                calls, seconds = self._encoded.delta(stats, (stats.calls, stats.seconds))
                for _ in range(int(calls)):  # a summary takes one observation at a time
                    self.encode.observe(seconds / calls)
                batcher = retriever.batcher
                now = (
                    batcher.passes - batcher.narrow_passes,
                    batcher.narrow_passes,
                    batcher.background_passes,
                    batcher.served,
                )
                wide, narrow, ingest, served = self._passed.delta(batcher, now)
                self.passes.labels("wide").inc(wide)
                self.passes.labels("narrow").inc(narrow)
                self.passes.labels("ingest").inc(ingest)
                self.encodes.inc(served)
            self._show_ingest()
            self.in_flight.set(self.slots.in_flight)
            self.waiting.set(self.slots.waiting)
            self.slot_count.set(self.slots.size)

    def _show_index(self, serving: Serving | None) -> None:
        self.ready.set(int(serving is not None))
        if self._version is not None:
            # zero first: under multiprocess mode removing a label leaves its last value in the file
            self.info.labels(*self._version).set(0)
            self.info.remove(*self._version)
            self._version = None
        if serving is not None:
            manifest: dict[str, Any] = serving.retriever.index.manifest
            self.documents.set(manifest["documents"])
            self.chunks.set(manifest["chunks"])
            self._version = (str(manifest.get("corpus_fingerprint", ""))[:12], serving.version)
            self.info.labels(*self._version).set(1)

    def _show_ingest(self) -> None:
        status = self.state.ingest
        self.watching.set(int(status.watching))
        self.ingesting.set(int(status.running_since is not None))
        outcomes = ("ok", "failed", "restarted")
        counts = self._ingested.delta(status.outcomes, tuple(float(status.outcomes[o]) for o in outcomes))
        for outcome, grown in zip(outcomes, counts, strict=True):
            self.ingests.labels(outcome).inc(grown)
        last = status.last
        if last is not None:
            self.last_ingest.set(last.finished)
            self.last_success.set(int(last.outcome == "ok"))
            self.last_seconds.set(last.seconds)

    def keep_synced(self, stop: threading.Event) -> None:
        """Sync every `SYNC_SECONDS` until `stop` is set (a worker's thread, under `--workers`)."""
        while not stop.wait(SYNC_SECONDS):
            self.sync()

    def exposition(self) -> bytes:
        self.sync()
        return generate_latest(self.exposed)


router = APIRouter(tags=["metrics"], include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text exposition of the metrics above."""
    exposed: Metrics = request.app.state.metrics
    return Response(exposed.exposition(), media_type=CONTENT_TYPE_LATEST)
