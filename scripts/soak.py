"""Soak test: N clients on every kind of request for a long while, printing the server's memory as
it goes, to tell a leak (memory that keeps climbing) from caches and pools that fill and level off.

    .venv/bin/python scripts/soak.py [--minutes 30] [--clients 16] [--interval 60] [--url URL --pid PID]

Each client loops over a mix of searches, asks (plain and streamed), chat completions, batches of
five searches, cites, passage lookups, the document list, lookups of ids that do not exist (404)
and refused searches (422), every question made unique (see scripts/loadtest.py, whose clients
these are). Every `--interval` seconds it prints one line to stderr: the server's resident memory
(anonymous and file-backed), its threads, and the requests and errors so far. At the end it prints
one JSON document with the whole curve and the errors (an answer other than the one an operation
expects: 200, or 404 and 422 for the two refusals).

Without `--url` it starts `rag serve` itself, as scripts/loadtest.py does (rate limit off, every
other setting the server's default or the environment's, so `MALLOC_ARENA_MAX=...` and `RAG_*`
variables reach the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadtest import Load, client_loop, started_server  # noqa: E402

# Searches and lookups most; answers in every form; a little of everything else, refusals included.
MIX = {
    "search": 6,
    "ask": 2,
    "ask_stream": 1,
    "chat": 1,
    "batch": 1,
    "cite": 2,
    "passage": 2,
    "documents": 1,
    "missing": 1,
    "bad": 1,
}


def memory(pid: int) -> dict[str, float]:
    """The process's resident memory in MB (all, anonymous, file-backed) and its thread count."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            fields[name] = int(value.split()[0])
    return {
        "rss_mb": round(fields["VmRSS"] / 1024, 1),
        "anon_mb": round(fields["RssAnon"] / 1024, 1),
        "file_mb": round(fields["RssFile"] / 1024, 1),
        "threads": fields["Threads"],
    }


async def soak(
    url: str, pid: int, clients: int, seconds: float, interval: float, seed: int
) -> dict[str, Any]:
    load = Load(seed, MIX)
    curve: list[dict[str, Any]] = []
    started = time.monotonic()

    def sample() -> None:
        point = {
            "minute": round((time.monotonic() - started) / 60, 2),
            **memory(pid),
            "requests": sum(len(v) for v in load.latencies.values()),
            "errors": sum(load.errors().values()),
        }
        curve.append(point)
        print(
            f"minute {point['minute']:6.2f}: rss {point['rss_mb']:7.1f} MB (anon {point['anon_mb']:.1f}, "
            f"file {point['file_mb']:.1f}), threads {point['threads']}, "
            f"requests {point['requests']}, errors {point['errors']}",
            file=sys.stderr,
            flush=True,
        )

    async def sampler(stop: float) -> None:
        while time.monotonic() < stop:
            await asyncio.sleep(min(interval, max(0.0, stop - time.monotonic())))
            sample()

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        seed_search = await http.post("/v1/search", json={"query": "probation pay", "k": 10})
        seed_search.raise_for_status()
        load.passages = [hit["id"] for hit in seed_search.json()["results"]]
        sample()  # before the load
        stop = time.monotonic() + seconds
        await asyncio.gather(sampler(stop), *(client_loop(http, load, stop) for _ in range(clients)))
    elapsed = time.monotonic() - started
    requests = sum(len(v) for v in load.latencies.values())
    return {
        "config": {"url": url, "clients": clients, "minutes": seconds / 60, "mix": MIX},
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "errors": dict(load.errors()),
        "by_operation": {op: len(v) for op, v in load.latencies.items()},
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of load")
    parser.add_argument("--clients", type=int, default=16, help="clients running at once")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between memory samples")
    parser.add_argument("--url", help="a running server; default: start `rag serve` on a free port")
    parser.add_argument("--pid", type=int, help="the --url server's process id (required with --url)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    seconds = args.minutes * 60
    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid: the soak is about the server's memory")
        report = asyncio.run(
            soak(args.url.rstrip("/"), args.pid, args.clients, seconds, args.interval, args.seed)
        )
    else:
        with started_server() as (url, pid):
            report = asyncio.run(soak(url, pid, args.clients, seconds, args.interval, args.seed))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
