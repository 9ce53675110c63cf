"""Benchmark: a script's loop of quote lookups against a running server, one `Client.cite` per quote
against `Client.cite_batch` (100 quotes a request), alternating in each round so a change in the
machine's speed hits both alike. The quotes are the distinct evidence strings of the question sets.
Also prints how many requests the server refused (429) and how long the client waited them out,
which is 0 against `make serve`'s defaults. Prints one JSON document.

    .venv/bin/rag serve --port 8123 &
    .venv/bin/python scripts/bench_cite.py --url http://127.0.0.1:8123 [--quotes 124] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx

from rag.client import Client
from rag.eval.retrieval import load_questions

ROOT = Path(__file__).resolve().parent.parent
SETS = [ROOT / "tests" / "data" / name for name in ("dev.jsonl", "tune.jsonl", "reworded.jsonl")]


def quotes(n: int) -> list[str]:
    return list(dict.fromkeys(e for path in SETS for q in load_questions(path) for e in q.evidence))[:n]


class Counting(httpx.Client):
    """An httpx client that counts the 429s it receives."""

    def __init__(self, url: str) -> None:
        super().__init__(base_url=url, timeout=60, event_hooks={"response": [self._seen]})
        self.refused = 0

    def _seen(self, response: httpx.Response) -> None:
        self.refused += response.status_code == 429


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--quotes", type=int, default=124)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = quotes(args.quotes)
    loop_s, batch_s = [], []
    with Counting(args.url) as http, Client(http=http) as rag:
        rag.cite(texts[0])  # warm up
        for _ in range(args.rounds):
            started = time.perf_counter()
            found = [rag.cite(t) for t in texts]
            loop_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            batched = [m for i in range(0, len(texts), 100) for m in rag.cite_batch(texts[i : i + 100])]
            batch_s.append(time.perf_counter() - started)
            if len(found) != len(batched) or not all(batched):
                raise SystemExit("the batch did not answer every quote")
        refused = http.refused
    loop, batch = statistics.median(loop_s), statistics.median(batch_s)
    print(
        json.dumps(
            {
                "quotes": len(texts),
                "rounds": args.rounds,
                "loop_of_cite_s": {
                    "median": round(loop, 3),
                    "per_quote_ms": round(1000 * loop / len(texts), 1),
                },
                "cite_batch_s": {
                    "median": round(batch, 3),
                    "per_quote_ms": round(1000 * batch / len(texts), 1),
                },
                "loop_over_batch": round(loop / batch, 2),
                "cites_per_second_in_the_loop": round(len(texts) / loop, 1),
                "refused_429": refused,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
