"""Benchmark: what runs the bundled model, torch or ONNX Runtime, measured in one process on the same
inputs, so the decision in the README (Performance, "The runtime") can be re-run.

Variants: torch (`rag/ingest/bert.py`, packed), ONNX Runtime fp32 (`rag/ingest/onnx.py`, exported
from the bundled weights with torch.onnx), and ONNX Runtime int8: the fp32 file through
`onnxruntime.quantization.quantize_dynamic`, per tensor and per channel. Each variant is timed
alternately with the others, input by input, so drift in a shared machine's speed hits all alike:

- `single`: one query at a time, p50 ms, on 1 and on 2 threads, over every question set;
- `batch`: batches of 8-16 queries on one thread, p50 ms per query (the batcher's narrow lanes);
- `passages`: every text the index embeds, batches of 64, seconds (rounds alternate);
- `vectors`: each variant against torch over those texts: max abs difference, cosine min and mean.

With `--quality`, each int8 variant is also scored as `rag eval` scores (retrieval and answers,
5-fold CV, every question set), once on queries only (passages stay torch's) and once on passages
too, and the largest change of any figure against torch is printed. fp32 needs no such run here:
`rag eval` itself compares it (`RAG_RUNTIME=torch` and `onnx`, README), and `diff A.json B.json`
prints every figure's change between two `rag eval` outputs.

`http` runs the same questions over HTTP against two `rag serve` processes at once, one per
runtime, on one index: sequential searches alternate between them query by query (p50 each), and
rounds of 1 then 16 concurrent clients alternate server by server (searches/s, and 16 ÷ 1 for each).
These are `make bench`'s two figures of the rule, measured paired, so a shared machine's drift hits
both servers alike.

    (ONNX Runtime and onnx, for the export, are dependencies of the project)
    .venv/bin/python scripts/bench_runtime.py [--quality]
    .venv/bin/python scripts/bench_runtime.py http [--queries 200] [--rounds 3]
    .venv/bin/python scripts/bench_runtime.py diff torch.json onnx.json
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from rag.eval.retrieval import load_questions
from rag.ingest.bert import read_layout
from rag.ingest.embedding import Embedder, resolve_model
from rag.ingest.onnx import OnnxEncoder, cached_export
from rag.settings import BUNDLED_MODEL, Settings

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval"
if not EVAL.is_dir():
    EVAL = ROOT / "tests" / "data"
QUESTION_SETS = [EVAL / "dev.jsonl", EVAL / "tune.jsonl", ROOT / "tests" / "data" / "reworded.jsonl"]
Encode = Callable[[list[str], int], np.ndarray]  # texts, threads -> vectors


def variants(work: Path) -> dict[str, Encode]:
    """Every variant's encode; the int8 files are quantized from the fp32 export into `work`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    layout = read_layout(resolve_model(BUNDLED_MODEL))
    assert layout is not None
    torch_model = Embedder(runtime="torch")
    fp32 = cached_export(layout, work)
    encoders = {"onnx_fp32": OnnxEncoder(layout, fp32)}
    for name, per_channel in (("onnx_int8", False), ("onnx_int8_per_channel", True)):
        path = work / f"{name}.onnx"
        quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, per_channel=per_channel)
        encoders[name] = OnnxEncoder(layout, path)
    out: dict[str, Encode] = {"torch": lambda texts, threads: torch_model.encode(texts, threads=threads)}
    for name, encoder in encoders.items():
        out[name] = lambda texts, threads, e=encoder: e.encode(texts, threads=threads)
    return out


def rotations(names: list[str]) -> Iterator[list[str]]:
    """The variants in a rotating order: each goes first, second, ... equally often."""
    i = 0
    while True:
        yield names[i % len(names) :] + names[: i % len(names)]
        i += 1


def timed(encode: Encode, texts: list[str], threads: int) -> float:
    started = time.perf_counter()
    encode(texts, threads)
    return (time.perf_counter() - started) * 1000


def speed(encodes: dict[str, Encode], queries: list[str], passages: list[str]) -> dict[str, Any]:
    names = list(encodes)
    for encode in encodes.values():  # warm up every session and thread count
        for threads in (1, 2):
            encode(queries[:8], threads)
    report: dict[str, Any] = {"load_average_before": os.getloadavg()}
    for threads in (1, 2):
        ms: dict[str, list[float]] = {n: [] for n in names}
        for query, order in zip(queries, rotations(names), strict=False):
            for name in order:
                ms[name].append(timed(encodes[name], [query], threads))
        report[f"single_{threads}_thread_p50_ms"] = {n: round(statistics.median(v), 2) for n, v in ms.items()}
    rng = np.random.default_rng(0)
    per_query: dict[str, list[float]] = {n: [] for n in names}
    start = 0
    for _, order in zip(range(40), rotations(names), strict=False):
        size = int(rng.integers(8, 17))
        batch = [queries[(start + j) % len(queries)] for j in range(size)]
        start += size
        for name in order:
            per_query[name].append(timed(encodes[name], batch, 1) / size)
    report["batch_8_16_1_thread_p50_ms_per_query"] = {
        n: round(statistics.median(v), 2) for n, v in per_query.items()
    }
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for _, order in zip(range(2), rotations(names), strict=False):
        for name in order:
            seconds[name].append(timed(encodes[name], passages, 2) / 1000)
    report["passages_2_threads_s"] = {n: round(min(v), 1) for n, v in seconds.items()}
    report["load_average_after"] = os.getloadavg()
    return report


def vectors(encodes: dict[str, Encode], passages: list[str]) -> dict[str, Any]:
    reference = encodes["torch"](passages, 2)
    out = {}
    for name, encode in encodes.items():
        if name != "torch":
            got = encode(passages, 2)
            cosine = (got * reference).sum(axis=1)
            out[name] = {
                "max_abs_difference": float(f"{np.abs(got - reference).max():.3g}"),
                "cosine_min": round(float(cosine.min()), 5),
                "cosine_mean": round(float(cosine.mean()), 6),
            }
    return out


def figures(report: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(path, value) of every figure in a `rag eval` report; intervals and counts are left out."""
    if isinstance(report, dict):
        for key, value in report.items():
            if key not in {"interval", "n", "questions", "wins", "losses", "ties", "chosen"}:
                yield from figures(value, f"{path}.{key}" if path else str(key))
    elif isinstance(report, float):
        yield path, report


def difference(a: Any, b: Any) -> dict[str, Any]:
    """Every figure that differs between two reports, and the largest change."""
    left, right = dict(figures(a)), dict(figures(b))
    changed = {p: round(right[p] - v, 4) for p, v in left.items() if p in right and right[p] != v}
    largest = max((abs(v) for v in changed.values()), default=0.0)
    return {"figures": len(left), "changed": changed, "largest_change": largest}


def quality(encodes: dict[str, Encode]) -> dict[str, Any]:
    """rag eval's reports (retrieval, answers; 5-fold CV) for torch and each int8 variant."""
    from rag.answer.answering import Answerer
    from rag.eval.quality import answer_report, retrieval_report
    from rag.ingest.corpus import load_corpus
    from rag.ingest.index import build
    from rag.service import index_config, make_retriever

    settings = Settings(data_dir=ROOT / "data", _env_file=None)  # type: ignore[call-arg]
    questions = [q for path in QUESTION_SETS for q in load_questions(path)]
    corpus = load_corpus(settings.data_dir)
    base = Embedder(runtime="torch")
    base_index = build(corpus, base, index_config(settings))

    def reports(embedder: Embedder, index: Any) -> dict[str, Any]:
        retriever = make_retriever(settings, index, embedder)
        answerer = Answerer.for_backend(None, settings, retriever)
        return {
            "retrieval": retrieval_report(retriever, questions, cv=5),
            "answers": answer_report(answerer, questions, cv=5),
        }

    reference = reports(base, base_index)
    out = {}
    for name in encodes:
        if "int8" in name:
            embedder = Embedder.from_loaded(base)
            # A handle whose encodes run this variant; token counts stay the tokenizer's.
            embedder.encode = lambda texts, batch_size=64, threads=None, e=encodes[name]: e(
                list(texts), threads
            )  # type: ignore[method-assign]
            for scope, index in (
                ("queries", base_index),
                ("queries_and_passages", build(corpus, embedder, index_config(settings))),
            ):
                out[f"{name}/{scope}"] = difference(reference, reports(embedder, index))
    return out


def http(queries: int, rounds: int, runtimes: tuple[str, ...] = ("torch", "onnx")) -> dict[str, Any]:
    """Paired HTTP figures of one server per runtime, serving one index side by side."""
    import httpx
    from bench import (
        concurrent_search,
        pct,
        question,
        rss_mb,
    )  # scripts/bench.py and loadtest.py, beside this file
    from loadtest import started_server

    index_dir = Path(tempfile.mkdtemp(prefix="rag-runtime-http-"))
    os.environ.update(
        RAG_INDEX_DIR=str(index_dir), RAG_DATA_DIR=str(ROOT / "data"), OMP_WAIT_POLICY="PASSIVE"
    )
    rag = str(Path(sys.executable).parent / "rag")
    subprocess.run(
        [rag, "ingest"], env={**os.environ, "RAG_RUNTIME": "torch"}, check=True, capture_output=True
    )
    with ExitStack() as servers:
        urls, pids = {}, {}
        for runtime in runtimes:
            server = started_server(env={**os.environ, "RAG_RUNTIME": runtime})
            urls[runtime], pids[runtime] = servers.enter_context(server)
        report: dict[str, Any] = {"load_average_before": os.getloadavg()}
        ms: dict[str, list[float]] = {r: [] for r in runtimes}
        clients = {r: httpx.Client(base_url=u, timeout=60) for r, u in urls.items()}
        for c in clients.values():
            c.post("/v1/search", json={"query": "warm up"}).raise_for_status()
        for i, order in zip(range(queries), rotations(list(runtimes)), strict=False):
            for runtime in order:  # the same unique query to each: each server caches only its own
                started = time.perf_counter()
                clients[runtime].post("/v1/search", json={"query": question(i), "k": 5}).raise_for_status()
                ms[runtime].append((time.perf_counter() - started) * 1000)
        report["search_http_p50_ms"] = {r: pct(v, 0.5) for r, v in ms.items()}
        throughput: dict[str, dict[str, list[float]]] = {r: {"1": [], "16": []} for r in runtimes}
        for n, order in zip(range(rounds), rotations(list(runtimes)), strict=False):
            for runtime in order:
                for count in (1, 16):
                    offset = (10 + 2 * n + (count == 16)) * queries
                    result = concurrent_search(urls[runtime], count, queries, 5, offset)
                    if result["errors"]:
                        raise SystemExit(f"{runtime}: {result['errors']} failed searches")
                    throughput[runtime][str(count)].append(result["searches_per_s"])
        report["searches_per_s_by_round"] = throughput
        report["16_over_1_by_round"] = {
            r: [round(b / a, 2) for a, b in zip(t["1"], t["16"], strict=True)] for r, t in throughput.items()
        }
        report["server_rss_mb"] = {r: round(rss_mb(pid)) for r, pid in pids.items()}
        report["load_average_after"] = os.getloadavg()
        return report


def main() -> None:
    if sys.argv[1:2] == ["diff"]:
        a, b = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        print(json.dumps(difference(a, b), indent=2))
        return
    if sys.argv[1:2] == ["http"]:
        sub = argparse.ArgumentParser()
        sub.add_argument("--queries", type=int, default=200)
        sub.add_argument("--rounds", type=int, default=3)
        options = sub.parse_args(sys.argv[2:])
        print(json.dumps(http(options.queries, options.rounds), indent=2))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quality", action="store_true", help="Also score each int8 variant as rag eval does."
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    settings = Settings(data_dir=ROOT / "data", _env_file=None)  # type: ignore[call-arg]
    from rag.ingest.corpus import load_corpus
    from rag.ingest.index import build
    from rag.service import index_config

    queries = [q.question for path in QUESTION_SETS for q in load_questions(path)]
    with tempfile.TemporaryDirectory(prefix="rag-runtime-") as work:
        encodes = variants(Path(work))
        index = build(load_corpus(settings.data_dir), Embedder(), index_config(settings))
        passages = sorted({c.embed_text for c in index.chunks} | {s.embed_text for s in index.sentences})
        report: dict[str, Any] = {"queries": len(queries), "passages": len(passages), "cpus": os.cpu_count()}
        report["speed"] = speed(encodes, queries, passages)
        report["vectors"] = vectors(encodes, passages)
        if args.quality:
            report["quality"] = quality(encodes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
