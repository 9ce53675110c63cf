"""Prometheus metrics at GET /metrics, with the standard client library.

Each app has its own registry (not the library's global one), so several apps in one process (the
tests build many) never collide and each reports only its own traffic. What is measured:

- ``rag_http_requests_total{method,route,status}`` and ``rag_http_request_duration_seconds{route}``:
  by route template (``/v1/passages/{passage_id}``, not each id), so the label set stays small;
  a path no route matches is ``unmatched``.
- ``rag_http_errors_total{code}``: error responses by the JSON error code they carried.
- ``rag_index_documents``, ``rag_index_chunks``, ``rag_index_info{version}``, ``rag_index_ready``.
- ``rag_expensive_in_flight`` / ``rag_expensive_waiting``: asks and batches running and queued.
- ``rag_model_encode_seconds`` (count and sum): the embedding model's encode calls, queries while
  serving.
- ``rag_query_passes_total{lane}`` and ``rag_query_encodes_total``: forward passes the query batcher
  ran, wide (alone, every core) or narrow (one core, beside others), and the queries they served;
  their ratio is the mean batch.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from api.deps import AppState
from api.limits import Slots

# Seconds: searches take milliseconds, answers up to the LLM timeout.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _StateCollector(Collector):
    """Read at scrape time from what the server holds now: the index and the slots."""

    def __init__(self, state: AppState, slots: Slots) -> None:
        self.state = state
        self.slots = slots

    def collect(self) -> Iterator[Metric]:
        serving = self.state.serving  # read once: a new index may be swapped in meanwhile
        retriever = serving.retriever if serving is not None else None
        yield GaugeMetricFamily(
            "rag_index_ready", "1 once a query can be answered.", value=int(bool(retriever))
        )
        if retriever is not None:
            manifest = retriever.index.manifest
            yield GaugeMetricFamily(
                "rag_index_documents", "Documents in the index.", value=manifest["documents"]
            )
            yield GaugeMetricFamily("rag_index_chunks", "Chunks in the index.", value=manifest["chunks"])
            info = GaugeMetricFamily("rag_index_info", "The index being served.", labels=["version"])
            info.add_metric([str(manifest.get("corpus_fingerprint", ""))[:12]], 1)
            yield info
            stats = retriever.embedder.stats
            yield SummaryMetricFamily(
                "rag_model_encode_seconds",
                "Time the embedding model spent encoding (queries, while serving).",
                count_value=stats.calls,
                sum_value=stats.seconds,
            )
            batcher = retriever.batcher
            passes = CounterMetricFamily(
                "rag_query_passes", "Query forward passes run, by lane kind.", labels=["lane"]
            )
            passes.add_metric(["wide"], batcher.passes - batcher.narrow_passes)
            passes.add_metric(["narrow"], batcher.narrow_passes)
            yield passes
            yield CounterMetricFamily(
                "rag_query_encodes", "Queries encoded by those passes.", value=batcher.served
            )
        yield GaugeMetricFamily(
            "rag_expensive_in_flight",
            "Asks, chat completions and batches running.",
            value=self.slots.in_flight,
        )
        yield GaugeMetricFamily(
            "rag_expensive_waiting", "Expensive requests queued for a slot.", value=self.slots.waiting
        )
        yield GaugeMetricFamily("rag_expensive_slots", "Slots for expensive requests.", value=self.slots.size)


class Metrics:
    """The app's registry and the request metrics the telemetry middleware records."""

    def __init__(self, state: AppState, slots: Slots) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rag_http_request_duration_seconds",
            "Time from request to the end of the response.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "rag_http_errors", "Error responses by error code.", ["code"], registry=self.registry
        )
        self.registry.register(_StateCollector(state, slots))

    def observe(self, method: str, route: str, status: int, seconds: float, error_code: str | None) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if error_code is not None:
            self.errors.labels(error_code).inc()


router = APIRouter(tags=["metrics"], include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text exposition of the metrics above."""
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
