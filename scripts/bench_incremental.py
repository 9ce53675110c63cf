"""Benchmark incremental ingest and live reload, as a user meets them.

On a copy of data/ in a temporary folder (`RAG_DATA_DIR`, `RAG_INDEX_DIR`), each run times three
`rag ingest` subprocesses, wall clock, imports and model load included:

1. a full build (`rag ingest --full`);
2. an unchanged re-ingest (everything reused);
3. an ingest after adding one new post (a seeded `rag synth` post in the blog's format).

Then `rag serve` runs on the copy (its own watch off) while a client searches for a phrase only a
second new post holds; the post is added and ingested, and the script prints how long after the
ingest ended the server first answered with it, and how many requests failed or were not 200
throughout. Prints one JSON document.

With `--watch`, it measures the server's own ingest instead (`rag serve` watching its data folder,
no command run): a full build (`rag ingest --full`, no server running) before and after, and in
between `rag serve` on the copy while a client searches without pause (or `--pause` seconds between
rounds), each round a unique question (timed; the server caches query vectors) and a search for the
phrase of the post to come, with /readyz asked four times a second. Each of `--posts` seeded
synthetic posts of the mean length is written into the folder after 15 s of searching; the script
prints how long after the write a search first found it, that time over the full build, the search
p50 before the write and while the server ingested (as /readyz said), every request that failed or
was not 200, and the load average.

    .venv/bin/python scripts/bench_incremental.py [--runs 3]
    .venv/bin/python scripts/bench_incremental.py --watch [--posts 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from loadtest import started_server  # a sibling script: `rag serve` on a free port, once ready

from rag.synth import SynthSpec, generate

ROOT = Path(__file__).resolve().parent.parent
RAG = str(Path(sys.executable).parent / "rag")
PHRASE = "Zephyrine Quillfeather scheme"  # in no post of data/


def ingest(env: dict[str, str], *flags: str) -> tuple[float, int, int]:
    """Seconds of one `rag ingest` subprocess, and the texts it encoded and reused."""
    started = time.perf_counter()
    done = subprocess.run([RAG, "ingest", *flags], env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    out = " ".join(done.stdout.split())  # rich wraps long lines
    encoded = re.search(r"encoded (?:all )?(\d+) texts", out)
    reused = re.search(r"reused (\d+)", out)
    if encoded is None:
        raise SystemExit(f"unexpected `rag ingest` output: {done.stdout}")
    return seconds, int(encoded.group(1)), int(reused.group(1)) if reused else 0


def new_post(seed: int, phrase: str | None = None) -> tuple[str, str]:
    """A plausible post: the first synthetic post (seeds from `seed` * 1000) within 10% of the mean
    length of the real posts, so it costs what a typical new post costs."""
    sizes = [len(p.read_text(encoding="utf-8")) for p in (ROOT / "data").glob("*.txt")]
    mean = statistics.mean(sizes)
    for attempt in range(seed * 1000, seed * 1000 + 1000):
        name, text = next(generate(ROOT / "data", SynthSpec(posts=1, comments=20, seed=attempt)))
        if abs(len(text) - mean) <= 0.1 * mean:
            break
    else:
        raise SystemExit("no synthetic post of the mean length in 1000 seeds")
    if phrase:
        date, _, rest = text.partition("\n\n")
        title, _, body = rest.partition("\n\n")
        text = f"{date}\n\n{title}\n\nThey call it the {phrase}, and nobody can say what it is for.\n\n{body}"
    return f"9{seed:02d}_{name}", text


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def live(env: dict[str, str], data: Path) -> dict[str, object]:
    """Serve the copy, add a post holding PHRASE, ingest, and time until a search finds it."""
    seen: list[tuple[float, int, str | None, bool]] = []  # time, status, X-Index-Version, found
    failures: list[str] = []
    stop = threading.Event()

    def search(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/search", json={"query": PHRASE, "k": 3})
                    found = r.status_code == 200 and any(PHRASE in h["text"] for h in r.json()["results"])
                    seen.append((time.perf_counter(), r.status_code, r.headers.get("x-index-version"), found))
                    ready = client.get("/readyz").status_code
                    if ready != 200:
                        failures.append(f"/readyz {ready}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    # `rag ingest` builds, the server reloads.
    with started_server(900, env={**env, "RAG_WATCH": "0"}) as (url, _):
        client = threading.Thread(target=search, args=(url,), daemon=True)
        client.start()
        name, text = new_post(99, PHRASE)
        (data / name).write_text(text, encoding="utf-8")
        ingest_s, encoded, _ = ingest(env)
        ended = time.perf_counter()
        while time.perf_counter() < ended + 30 and not any(f for t, _, _, f in seen if t > ended):
            time.sleep(0.05)
        time.sleep(1)
        stop.set()
        client.join(timeout=30)
    found = [t for t, _, _, f in seen if f]
    return {
        "ingest_s": round(ingest_s, 1),
        "encoded": encoded,
        "found_after_ingest_s": round(min(found) - ended, 2) if found else None,
        "requests": len(seen),
        "failed_or_not_200": len(failures) + sum(1 for _, status, _, _ in seen if status != 200),
        "index_versions_seen": sorted({v for _, _, v, _ in seen if v}),
    }


PHRASES = [  # each in no post of data/, one for each new post
    "Zephyrine Quillfeather scheme",
    "Ambrosial Quackenbush plan",
    "Crepuscular Thistlewood pact",
    "Marmoreal Fennimore accord",
    "Sesquipedalian Wobbleton charter",
    "Halcyon Pettigrew protocol",
]


class Searcher:
    """One client searching without pause: a unique question (timed), then the phrase awaited.
    A second thread asks /readyz four times a second whether the server is ingesting."""

    def __init__(self, url: str, pause: float) -> None:
        self.url = url
        self.pause = pause
        self.phrase = PHRASES[0]
        self.samples: list[tuple[float, float]] = []  # when, ms of a unique search
        self.ingesting: list[tuple[float, bool]] = []  # when, /readyz said it was ingesting
        self.found: dict[str, float] = {}  # phrase -> when a search first found it
        self.failures: list[str] = []
        self.requests = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.search, self.probe)]

    def search(self) -> None:
        from bench import question  # scripts/bench.py: the dev questions, made unique per call

        i = 0
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                i += 1
                try:
                    t = time.perf_counter()
                    r = client.post("/v1/search", json={"query": question(i), "k": 5})
                    ms = (time.perf_counter() - t) * 1000
                    phrase = self.phrase
                    hit = client.post("/v1/search", json={"query": phrase, "k": 3})
                    self.requests += 2
                    self.failures += [f"/v1/search {x.status_code}" for x in (r, hit) if x.status_code != 200]
                    self.samples.append((t, ms))
                    if hit.status_code == 200 and any(phrase in h["text"] for h in hit.json()["results"]):
                        self.found.setdefault(phrase, time.perf_counter())
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.stop.wait(self.pause)

    def probe(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.wait(0.25):
                try:
                    ready = client.get("/readyz")
                    self.requests += 1
                    if ready.status_code != 200:
                        self.failures.append(f"/readyz {ready.status_code}")
                        continue
                    self.ingesting.append((time.perf_counter(), ready.json()["ingesting_since"] is not None))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def while_ingesting(self, since: float) -> list[float]:
        """ms of the searches after `since` that started between two probes saying "ingesting"."""
        pairs = zip(self.ingesting, self.ingesting[1:], strict=False)
        spans = [(a, b) for (a, ing), (b, ing2) in pairs if ing and ing2]
        return [ms for t, ms in self.samples if t >= since and any(a <= t < b for a, b in spans)]


def p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def watch_figure(env: dict[str, str], data: Path, work: Path, posts: int, pause: float) -> dict[str, object]:
    """The server's own ingest of `posts` new posts, against a full build measured around it."""
    shutil.copytree(ROOT / "data", data)
    full_before = ingest(env, "--full")
    with started_server(900, env=env, log=work / "serve.log") as (url, _):
        searcher = Searcher(url, pause)
        results = []
        try:
            for thread in searcher.threads:
                thread.start()
            for k in range(posts):
                searcher.phrase = PHRASES[k % len(PHRASES)]
                baseline_from = time.perf_counter()
                time.sleep(15)  # searches before the post: the baseline p50
                load_before = os.getloadavg()[0]
                name, text = new_post(k, searcher.phrase)
                written = time.perf_counter()
                (data / name).write_text(text, encoding="utf-8")
                while searcher.phrase not in searcher.found:
                    if time.perf_counter() - written > 900 or not searcher.threads[0].is_alive():
                        raise SystemExit(f"post {k} not found in 900 s; see {work / 'serve.log'}")
                    time.sleep(0.05)
                found_s = searcher.found[searcher.phrase] - written
                time.sleep(3)  # the reload is over; the next baseline starts clean
                record = httpx.get(f"{url}/readyz").json()["last_ingest"]
                before = [ms for t, ms in searcher.samples if baseline_from <= t < written]
                during = searcher.while_ingesting(written)
                results.append(
                    {
                        "found_after_write_s": round(found_s, 2),
                        "server_ingest_s": record["seconds"],
                        "encoded": record["encoded"],
                        "reused": record["reused"],
                        "search_p50_ms_before": p50(before),
                        "search_p50_ms_while_ingesting": p50(during),
                        "searches_before": len(before),
                        "searches_while_ingesting": len(during),
                        "load_average_1m_before": round(load_before, 2),
                    }
                )
                print(json.dumps(results[-1]), file=sys.stderr)
        finally:
            searcher.stop.set()
            for thread in searcher.threads:
                thread.join(timeout=60)
    for k in range(posts):  # the full build after runs over the same corpus as the one before
        (data / new_post(k, PHRASES[k % len(PHRASES)])[0]).unlink()
    full_after = ingest(env, "--full")
    full_s = statistics.mean([full_before[0], full_after[0]])
    return {
        "full_build_s": [round(full_before[0], 1), round(full_after[0], 1)],
        "posts": [
            {**r, "over_full_build": round(float(r["found_after_write_s"]) / full_s, 3)} for r in results
        ],
        "client_pause_s": pause,
        "requests": searcher.requests,
        "failed_requests": len(searcher.failures),
        "failures": searcher.failures[:10],
        "load_average_1m_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-serve", action="store_true", help="skip the live-reload part")
    parser.add_argument("--watch", action="store_true", help="measure the server's own ingest instead")
    parser.add_argument("--posts", type=int, default=3, help="new posts written, with --watch")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between a round's searches")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rag-bench-incremental-"))
    data, index = work / "data", work / "index"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_DATA_DIR": str(data), "RAG_INDEX_DIR": str(index)}
    if args.watch:
        try:
            figure = watch_figure(env, data, work, args.posts, args.pause)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"machine": machine(), "watch": figure}, indent=2))
        return
    runs = []
    try:
        for run in range(args.runs):
            shutil.rmtree(data, ignore_errors=True)
            shutil.copytree(ROOT / "data", data)
            full_s, full_texts, _ = ingest(env, "--full")
            same_s, same_encoded, _ = ingest(env)
            name, text = new_post(run)
            (data / name).write_text(text, encoding="utf-8")
            add_s, add_encoded, add_reused = ingest(env)
            runs.append(
                {
                    "full_s": round(full_s, 1),
                    "unchanged_s": round(same_s, 1),
                    "add_post_s": round(add_s, 1),
                    "add_post_over_full": round(add_s / full_s, 3),
                    "texts_full": full_texts,
                    "encoded_unchanged": same_encoded,
                    "encoded_add_post": add_encoded,
                    "reused_add_post": add_reused,
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr)
        if not runs:  # only the live part: it needs a built index
            shutil.copytree(ROOT / "data", data)
            ingest(env)
        served = None if args.no_serve else live(env, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(key: str) -> float | None:
        return round(statistics.median(float(r[key]) for r in runs), 3) if runs else None

    print(
        json.dumps(
            {
                "machine": machine(),
                "posts": len(list((ROOT / "data").glob("*.txt"))),
                "median": {
                    k: median(k) for k in ("full_s", "unchanged_s", "add_post_s", "add_post_over_full")
                },
                "runs": runs,
                "live_reload": served,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
