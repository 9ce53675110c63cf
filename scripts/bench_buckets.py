"""What the rate limit costs a request: one token taken from the in-memory buckets (one process)
and from the shared SQLite buckets (`rag serve --workers`, api/buckets.py), alone and while another
process takes from the same database as fast as it can; beside them, in the same run, a search over
the index at RAG_INDEX_DIR (built first if missing), for scale.

The kinds are measured in alternating rounds, so a change in the machine's load falls on each alike;
the medians over rounds are printed as one JSON object, with the load average.

    .venv/bin/python scripts/bench_buckets.py [--takes 20000] [--rounds 5] [--searches 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.buckets import SharedTokenBuckets  # noqa: E402
from api.limits import Buckets, TokenBuckets  # noqa: E402

RATE = 1e9  # every take is granted: the cost measured is the store's, not a refusal's
RIVAL = """
import sys
from pathlib import Path
from api.buckets import SharedTokenBuckets
buckets = SharedTokenBuckets(Path(sys.argv[1]), rate=1e9, burst=1e9)
print("ready", flush=True)
n = 0
while True:
    buckets.take(f"addr:198.51.100.{n % 50}")
    n += 1
"""


def per_take_us(buckets: Buckets, takes: int) -> float:
    started = time.perf_counter()
    for n in range(takes):
        buckets.take(f"addr:203.0.113.{n % 50}")  # 50 clients, as many rows
    return (time.perf_counter() - started) / takes * 1e6


def search_ms(searches: int) -> float:
    """Median milliseconds of a search with a query never seen before (no cache hit)."""
    from rag.ingest.embedding import Embedder
    from rag.service import make_retriever, open_index
    from rag.settings import Settings

    settings = Settings()
    embedder = Embedder(settings.model, settings.device)
    retriever = make_retriever(settings, open_index(settings, embedder).index, embedder)
    retriever.search("warm up", 10)
    times = []
    for n in range(searches):
        started = time.perf_counter()
        retriever.search(f"pay progression for probation officers {n}", 10)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--searches", type=int, default=40)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"in_memory": [], "shared": [], "shared_with_rival": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "buckets.sqlite"
        shared = SharedTokenBuckets(path, RATE, RATE)
        for _ in range(args.rounds):
            figures["in_memory"].append(per_take_us(TokenBuckets(RATE, RATE), args.takes))
            figures["shared"].append(per_take_us(shared, args.takes))
            rival = subprocess.Popen(
                [sys.executable, "-c", RIVAL, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
            )
            try:
                assert rival.stdout is not None and rival.stdout.readline().strip() == "ready"
                figures["shared_with_rival"].append(per_take_us(shared, args.takes))
            finally:
                rival.kill()
                rival.wait()
    report: dict[str, object] = {f"{kind}_us": round(statistics.median(v), 1) for kind, v in figures.items()}
    search = search_ms(args.searches)
    report["search_ms"] = round(search, 1)
    rival_us = statistics.median(figures["shared_with_rival"])
    report["shared_with_rival_share_of_a_search"] = f"{rival_us / 1000 / search:.1%}"
    report["load_average"] = [round(x, 1) for x in os.getloadavg()]
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
