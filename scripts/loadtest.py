"""Load test: N clients for T seconds mixing search, ask, cite and passage lookups, while a separate
prober times /healthz. Prints one JSON document: requests, errors by status, p50/p95/p99 per
operation, server memory before and after, and the /healthz latencies seen during the load.

    .venv/bin/python scripts/loadtest.py [--clients 32] [--duration 60] [--url http://127.0.0.1:8000]

Without `--url` it starts `rag serve` itself on 127.0.0.1 and a free port, with the index in
RAG_INDEX_DIR (built first if missing) and RAG_RATE_LIMIT=0: every client here calls from one
address without a key, so the per-client limit would otherwise refuse the load this script exists
to apply. Every other setting is the server's default (or the environment's). With `--url`, pass
`--pid` to report that server's memory.

The prober runs in a process of its own, so its timings are the server's and not this script's
event loop, busy with 32 clients' responses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS_FILE = ROOT / "tests" / "data" / "dev.jsonl"
# What a client does next, by weight: mostly searches and lookups, answers the heaviest part.
MIX = {"search": 4, "ask": 2, "cite": 2, "passage": 2}
# Statuses that answer an operation as intended; any other counts as an error. Operations beyond
# MIX are for scripts/soak.py, which exercises every kind of request, refusals included.
EXPECTED = {"missing": "404", "bad": "422"}
PROBE_INTERVAL = 0.1  # seconds between /healthz probes


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started_server(
    ready_timeout: float = 600, env: Mapping[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[str, int]]:
    """`rag serve` on 127.0.0.1 and a free port, rate limit off, with `env` (default: this
    process's environment) and its log written to `log` (default: dropped); yields (url, pid) once
    ready."""
    port = free_port()
    env = {**(os.environ if env is None else env), "HF_HUB_OFFLINE": "1", "RAG_RATE_LIMIT": "0"}
    rag = str(Path(sys.executable).parent / "rag")
    # A file, not a pipe: a pipe nobody reads would stall the server once its buffer fills.
    with log.open("wb") if log is not None else nullcontext(subprocess.DEVNULL) as out:
        server = subprocess.Popen(
            [rag, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if server.poll() is not None:
                see = f"; see {log}" if log is not None else ""
                raise SystemExit(f"rag serve exited with {server.returncode}{see}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server not ready after {ready_timeout:g} s")
            time.sleep(0.1)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=60)


def probe(url: str, seconds: float, out: Any) -> None:
    """In its own process: GET /healthz every PROBE_INTERVAL for `seconds`; sends the list of
    latencies in ms (None for a probe that failed or took over 5 s)."""
    latencies: list[float | None] = []
    stop = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            took = (time.perf_counter() - started) * 1000
            latencies.append(took if ok else None)
            time.sleep(max(0.0, PROBE_INTERVAL - took / 1000))
    out.put(latencies)


class Load:
    """The clients' shared inputs and what they measured."""

    def __init__(self, seed: int, mix: dict[str, int] = MIX) -> None:
        rows = [json.loads(line) for line in QUESTIONS_FILE.read_text(encoding="utf-8").splitlines() if line]
        self.questions = [r["question"] for r in rows]
        self.quotes = [e for r in rows for e in r.get("evidence", [])]
        self.passages: list[str] = []
        self.random = random.Random(seed)
        self.counter = 0
        self.mix = mix
        self.latencies: dict[str, list[float]] = {op: [] for op in mix}
        self.statuses: dict[str, Counter[str]] = {op: Counter() for op in mix}

    def question(self) -> str:
        """A question made unique per call: the server caches recent query vectors, and repeating
        30 questions would measure the cache, not the model."""
        self.counter += 1
        return f"{self.random.choice(self.questions)} ({self.counter})"

    def request(self, op: str) -> tuple[str, str, dict[str, Any] | None]:
        if op == "search":
            return "POST", "/v1/search", {"query": self.question(), "k": 5}
        if op == "ask":
            return "POST", "/v1/ask", {"question": self.question(), "k": 5}
        if op == "cite":
            return "POST", "/v1/cite", {"text": self.random.choice(self.quotes), "k": 3}
        if op == "passage":
            return "GET", f"/v1/passages/{self.random.choice(self.passages)}", None
        if op == "ask_stream":
            return "POST", "/v1/ask", {"question": self.question(), "k": 5, "stream": True}
        if op == "chat":
            messages = [{"role": "user", "content": self.question()}]
            return "POST", "/v1/chat/completions", {"model": "archive", "messages": messages}
        if op == "batch":
            return "POST", "/v1/search/batch", {"queries": [{"query": self.question()} for _ in range(5)]}
        if op == "documents":
            return "GET", "/v1/documents", None
        if op == "missing":  # a fresh unknown id each time: nothing may be kept per id
            return "GET", f"/v1/passages/no-such-passage-{self.question()}", None
        if op == "bad":
            return "POST", "/v1/search", {"query": self.question(), "k": 51}
        raise ValueError(f"unknown operation {op!r}")

    def failed(self, op: str, status: str) -> bool:
        return status != EXPECTED.get(op, "200")

    def errors(self) -> Counter[str]:
        """Answers other than the one each operation expects, by status."""
        errors: Counter[str] = Counter()
        for op, counts in self.statuses.items():
            errors.update({f"{op} {status}": n for status, n in counts.items() if self.failed(op, status)})
        return errors


async def client_loop(http: httpx.AsyncClient, load: Load, stop: float) -> None:
    ops, weights = list(load.mix), list(load.mix.values())
    while time.monotonic() < stop:
        op = load.random.choices(ops, weights)[0]
        method, path, body = load.request(op)
        started = time.perf_counter()
        try:
            response = await http.request(method, path, json=body)
            status = str(response.status_code)
            if op == "search" and response.status_code == 200:
                ids = [hit["id"] for hit in response.json()["results"]]
                load.passages.extend(ids[:2])
                del load.passages[:-500]  # keep a bounded, recent sample
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        load.latencies[op].append((time.perf_counter() - started) * 1000)
        load.statuses[op][status] += 1


async def run_load(url: str, clients: int, seconds: float, seed: int) -> Load:
    load = Load(seed)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        seed_search = await http.post("/v1/search", json={"query": "probation pay", "k": 10})
        seed_search.raise_for_status()
        load.passages = [hit["id"] for hit in seed_search.json()["results"]]
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client_loop(http, load, stop) for _ in range(clients)))
    return load


def measure(url: str, pid: int | None, clients: int, seconds: float, seed: int) -> dict[str, Any]:
    rss_before = rss_mb(pid)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    prober = context.Process(target=probe, args=(url, seconds, results), daemon=True)
    prober.start()
    started = time.monotonic()
    load = asyncio.run(run_load(url, clients, seconds, seed))
    elapsed = time.monotonic() - started
    probes: list[float | None] = results.get(timeout=seconds + 60)
    prober.join(timeout=10)
    rss_after = rss_mb(pid)

    total = sum(len(v) for v in load.latencies.values())
    errors: Counter[str] = Counter()
    for op, counts in load.statuses.items():
        errors.update({status: n for status, n in counts.items() if load.failed(op, status)})
    answered = [p for p in probes if p is not None]
    return {
        "config": {"url": url, "clients": clients, "duration_s": seconds, "mix": MIX, "cpus": os.cpu_count()},
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "errors": dict(errors),
        "operations": {
            op: {
                "requests": len(load.latencies[op]),
                "errors": sum(n for s, n in load.statuses[op].items() if load.failed(op, s)),
                **percentiles(load.latencies[op]),
            }
            for op in MIX
        },
        "server_rss_mb": {"before": rss_before, "after": rss_after},
        "healthz": {
            "probes": len(probes),
            "failed": len(probes) - len(answered),
            **percentiles(answered),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="clients running at once")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--url", help="a running server; default: start `rag serve` on a free port")
    parser.add_argument("--pid", type=int, help="the --url server's process id, for its memory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.url:
        report = measure(args.url.rstrip("/"), args.pid, args.clients, args.duration, args.seed)
    else:
        with started_server() as (url, pid):
            report = measure(url, pid, args.clients, args.duration, args.seed)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
