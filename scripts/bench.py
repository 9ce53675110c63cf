"""Benchmark: ingest time, index size, server memory, and search latency over HTTP.

Starts `rag serve` as a real subprocess on 127.0.0.1 with a fresh index directory, so the figures
include model loading and index building as a user sees them. Prints one JSON document.

    .venv/bin/python scripts/bench.py [--queries 200] [--k 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [json.loads(line)["question"] for line in (ROOT / "tests" / "data" / "dev.jsonl").open()]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    index_dir = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_INDEX_DIR": str(index_dir),
        "RAG_DATA_DIR": str(ROOT / "data"),
    }
    rag = str(Path(sys.executable).parent / "rag")

    started = time.perf_counter()
    subprocess.run([rag, "ingest"], env=env, check=True, capture_output=True)
    ingest_s = time.perf_counter() - started
    size_mb = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file()) / 2**20

    server = subprocess.Popen(
        [rag, "serve", "--port", str(args.port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{args.port}"
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - started > 300:
                    raise SystemExit("server not ready after 300 s")
                time.sleep(0.05)
            ready_s = time.perf_counter() - started
            client.post("/v1/search", json={"query": "warm up"})
            wall, server_ms = [], []
            for i in range(args.queries):
                q = QUESTIONS[i % len(QUESTIONS)]
                t = time.perf_counter()
                r = client.post("/v1/search", json={"query": q, "k": args.k})
                wall.append((time.perf_counter() - t) * 1000)
                server_ms.append(r.json()["took_ms"])
        rss = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    def pct(values: list[float], p: float) -> float:
        return round(sorted(values)[min(len(values) - 1, int(p * len(values)))], 1)

    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "ingest_s": round(ingest_s, 1),
                "index_mb": round(size_mb, 2),
                "server_ready_s": round(ready_s, 1),
                "server_rss_mb": round(rss, 0),
                "search_http_ms": {
                    "p50": pct(wall, 0.5),
                    "p95": pct(wall, 0.95),
                    "mean": round(statistics.mean(wall), 1),
                },
                "search_server_ms": {"p50": pct(server_ms, 0.5), "p95": pct(server_ms, 0.95)},
                "queries": args.queries,
                "qps_sequential": round(1000 / statistics.mean(wall), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
