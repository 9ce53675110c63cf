"""Benchmark incremental ingest and live reload, as a user meets them.

On a copy of data/ in a temporary folder (`RAG_DATA_DIR`, `RAG_INDEX_DIR`), each run times three
`rag ingest` subprocesses, wall clock, imports and model load included:

1. a full build (`rag ingest --full`);
2. an unchanged re-ingest (everything reused);
3. an ingest after adding one new post (a seeded `rag synth` post in the blog's format).

Then `rag serve` runs on the copy while a client searches for a phrase only a second new post holds;
the post is added and ingested, and the script prints how long after the ingest ended the server first
answered with it, and how many requests failed or were not 200 throughout. Prints one JSON document.

    .venv/bin/python scripts/bench_incremental.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live(env: dict[str, str], data: Path) -> dict[str, object]:
    """Serve the copy, add a post holding PHRASE, ingest, and time until a search finds it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [RAG, "serve", "--port", str(port)],
        env={**env, "RAG_RATE_LIMIT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: list[tuple[float, int, str | None, bool]] = []  # time, status, X-Index-Version, found
    failures: list[str] = []
    stop = threading.Event()

    def search() -> None:
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

    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 900:
                raise SystemExit("server not ready after 900 s")
            time.sleep(0.1)
        client = threading.Thread(target=search, daemon=True)
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
    finally:
        server.terminate()
        server.wait(timeout=30)
    found = [t for t, _, _, f in seen if f]
    return {
        "ingest_s": round(ingest_s, 1),
        "encoded": encoded,
        "found_after_ingest_s": round(min(found) - ended, 2) if found else None,
        "requests": len(seen),
        "failed_or_not_200": len(failures) + sum(1 for _, status, _, _ in seen if status != 200),
        "index_versions_seen": sorted({v for _, _, v, _ in seen if v}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-serve", action="store_true", help="skip the live-reload part")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rag-bench-incremental-"))
    data, index = work / "data", work / "index"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_DATA_DIR": str(data), "RAG_INDEX_DIR": str(index)}
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
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
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
