"""Pair two versions of the code (not just two settings) on the same questions.

`rag eval --against KEY=VALUE` compares two settings of one checkout. A change to the code itself
(how chunks are cut, how signals are fused) needs the old code's figures too: run `outcomes` once
with each version on the import path, then `compare` the two files. `outcomes` uses only library
calls that main has had since the evaluation tools landed, so it runs against an older checkout:

    git -C /work/main archive main | tar -x -C /tmp/main      # the code to compare against
    (cd /tmp/main && RAG_INDEX_DIR=/tmp/main-index PYTHONPATH=/tmp/main \\
        $PWD/.venv/bin/python $PWD/scripts/paired_eval.py outcomes --answers -o /tmp/a.json $QUESTIONS)
    .venv/bin/python scripts/paired_eval.py outcomes --answers -o /tmp/b.json $QUESTIONS
    .venv/bin/python scripts/paired_eval.py compare /tmp/a.json /tmp/b.json

where $QUESTIONS are the question files (dev, tune, reworded). `outcomes` builds the index in
RAG_INDEX_DIR when it is missing or stale and reads every other RAG_* setting from the
environment, so `RAG_DENSE_WEIGHT=0 ... outcomes` gives BM25 alone. `compare` prints JSON: each
metric of B against A (wins, losses, mean difference and its 95% interval), over all questions and
per question set (`--table`: the same as a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def outcomes(files: list[Path], answers: bool, out: Path) -> None:
    from rag.eval.quality import ranks_to_outcomes
    from rag.eval.retrieval import evaluate, load_questions
    from rag.ingest.embedding import Embedder
    from rag.service import make_retriever, open_index
    from rag.settings import get_settings

    settings = get_settings()
    embedder = Embedder(settings.model, settings.device)
    retriever = make_retriever(settings, open_index(settings, embedder).index, embedder)
    questions = [q for path in files for q in load_questions(path)]
    per_metric = ranks_to_outcomes(evaluate(retriever, questions).ranks, questions)
    if answers:
        from rag.answer.answering import Answerer
        from rag.eval.answers import answer_outcomes

        answerer = Answerer.for_backend(None, settings, retriever)
        per_metric.update(answer_outcomes(questions, [answerer.answer(q.question) for q in questions]))
    record = {
        "index": {k: retriever.index.manifest.get(k) for k in ("chunking", "chunks", "sentences")},
        "questions": [{"id": q.id, "set": q.question_set} for q in questions],
        # NaN (the metric does not apply) is written as null
        "outcomes": {k: [None if np.isnan(x) else float(x) for x in v] for k, v in per_metric.items()},
    }
    out.write_text(json.dumps(record) + "\n", encoding="utf-8")


def _load(path: Path) -> tuple[list[tuple[str, str]], dict[str, np.ndarray]]:
    record = json.loads(path.read_text(encoding="utf-8"))
    keys = [(q["set"], q["id"]) for q in record["questions"]]
    values = {k: np.array([np.nan if x is None else x for x in v]) for k, v in record["outcomes"].items()}
    return keys, values


def compare(a_path: Path, b_path: Path) -> dict[str, Any]:
    from rag.eval.quality import compare as paired_metrics
    from rag.eval.quality import metric_figures

    keys_a, a = _load(a_path)
    keys_b, b = _load(b_path)
    if keys_a != keys_b:
        raise SystemExit("the two files hold different questions (or a different order)")
    groups = {"all": np.arange(len(keys_a))}
    for name in dict.fromkeys(s for s, _ in keys_a):
        groups[name] = np.array([i for i, (s, _) in enumerate(keys_a) if s == name])
    report: dict[str, Any] = {}
    for name, rows in groups.items():
        sub_a = {k: v[rows] for k, v in a.items() if k in b}
        sub_b = {k: b[k][rows] for k in sub_a}
        paired, fig_a, fig_b = paired_metrics(sub_a, sub_b), metric_figures(sub_a), metric_figures(sub_b)
        report[name] = {
            metric: {"a": fig_a[metric], "b": fig_b[metric], "b_against_a": paired[metric]}
            for metric in sub_a
            if metric in paired
        }
    return report


def table(report: dict[str, Any]) -> str:
    """The comparison as a Markdown table: one row per question group and metric."""
    rows = [
        "| questions | metric | A | B | B wins / losses | difference [95% interval] |",
        "|---|---|---|---|---|---|",
    ]
    for group, metrics in report.items():
        for metric, v in metrics.items():
            p = v["b_against_a"]
            low, high = p["ci95"]
            rows.append(
                f"| {group} ({v['a']['n']}) | {metric} | {v['a']['value']:.3f} | {v['b']['value']:.3f} | "
                f"{p['wins']} / {p['losses']} | {p['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("outcomes", help="per-question outcomes of the importable `rag`")
    run.add_argument("questions", nargs="+", type=Path)
    run.add_argument("--answers", action="store_true", help="also answer each question (extractive)")
    run.add_argument("-o", "--out", type=Path, required=True)
    pair = commands.add_parser("compare", help="B against A, paired, overall and per set")
    pair.add_argument("a", type=Path)
    pair.add_argument("b", type=Path)
    pair.add_argument("--table", action="store_true", help="print a Markdown table instead of JSON")
    args = parser.parse_args()
    if args.command == "outcomes":
        outcomes(args.questions, args.answers, args.out)
        return
    report = compare(args.a, args.b)
    sys.stdout.write(table(report) if args.table else json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
