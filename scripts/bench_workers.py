"""Throughput of `rag serve --workers N`: searches/s with many clients at once, for each N.

Builds the bundled corpus's index once (`rag ingest`), then for each N starts `rag serve
--workers N` as a real subprocess on 127.0.0.1, waits until every worker answers `/readyz`, and
has `--clients` connections search for `--seconds`, each query unique (the server caches recent
query vectors). Prints one JSON line per N.

    .venv/bin/python scripts/bench_workers.py [--workers 1 2] [--clients 16] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [json.loads(line)["question"] for line in (ROOT / "tests" / "data" / "dev.jsonl").open()]


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (the workers), in MB."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0.0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def wait_ready(url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 20:  # twenty in a row: every worker is up, not just the first
        if time.monotonic() > deadline:
            raise SystemExit("server not ready")
        try:
            streak = streak + 1 if httpx.get(f"{url}/readyz", timeout=5).status_code == 200 else 0
        except httpx.HTTPError:
            streak = 0
        time.sleep(0.1)


def load(url: str, clients: int, seconds: float, offset: int) -> dict[str, float]:
    async def run() -> dict[str, float]:
        done = errors = 0
        counter = iter(range(10**9))
        stop = time.perf_counter() + seconds
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def worker() -> None:
                nonlocal done, errors
                while time.perf_counter() < stop:
                    i = next(counter)
                    query = f"{QUESTIONS[i % len(QUESTIONS)]} (run {offset + i})"
                    t = time.perf_counter()
                    try:
                        r = await client.post("/v1/search", json={"query": query, "k": 5})
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append((time.perf_counter() - t) * 1000)
                    done += ok
                    errors += not ok

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        return {
            "searches_per_s": round(done / elapsed, 1),
            "errors": errors,
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--index-dir", type=Path, help="an index of data/ already built (skips the ingest)")
    args = parser.parse_args()
    index_dir = args.index_dir or Path(tempfile.mkdtemp(prefix="rag-bench-workers-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_INDEX_DIR": str(index_dir),
        "RAG_DATA_DIR": str(ROOT / "data"),
        # All clients share one address and no key: the per-client rate limit would refuse them.
        "RAG_RATE_LIMIT": "0",
    }
    rag = str(Path(sys.executable).parent / "rag")
    if args.index_dir is None:
        subprocess.run([rag, "ingest"], env=env, check=True, capture_output=True)
    for n in args.workers:
        server = subprocess.Popen(
            [rag, "serve", "--port", str(args.port), "--workers", str(n)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{args.port}"
            wait_ready(url)
            load(url, args.clients, 3, offset=10**6 * n)  # warm-up: every worker's first queries
            result = load(url, args.clients, args.seconds, offset=10**7 * n)
            print(
                json.dumps(
                    {"workers": n, "clients": args.clients, **result, "rss_mb": round(rss_mb(server.pid))}
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
