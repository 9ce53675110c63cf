"""Quality figures that hold on unseen questions: per-question outcomes, intervals, paired comparisons
and settings chosen by cross-validation.

Every evaluation first turns into *outcomes*: for each metric, one value per question (NaN where
the metric does not apply, e.g. hit@5 for a question the archive cannot answer). Everything else
is arithmetic on those arrays:

- `summarize`: each metric with its bootstrap 95% interval, overall, per question kind and per
  question set (the file a question came from);
- `compare`: configuration B against A on the same questions (wins, losses, mean difference and
  its interval), so a one-question change is never read as progress;
- `cross_validate_retrieval` / `cross_validate_answers` / `cross_validate_support`: a setting
  chosen on k-1 folds and scored on the held-out fold, repeated over reshuffles; the figure
  reported is the held-out one.

Not here: how a single question is scored (rag/eval/retrieval.py, rag/eval/answers.py), the
statistics themselves (rag/eval/stats.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rag.answer.answering import Answer, Answerer, final_answer
from rag.answer.support import level_of, support_score, support_scorer
from rag.backends.extractive import ExtractiveBackend
from rag.eval.answers import answer_outcomes, score_answers
from rag.eval.baseline import CharWindowBM25
from rag.eval.retrieval import KS, Question, evaluate
from rag.eval.stats import Table, cross_validate, figure, paired
from rag.search.retrieval import Mode, Retriever
from rag.settings import Settings

Outcomes = dict[str, np.ndarray]  # metric -> (n_questions,) float; NaN where the metric does not apply

# Grids searched by cross-validation. Dense weight: the sentence signal's share of fusion (BM25
# gets the rest). Answers: the extractive backend's blend and refusal threshold.
DENSE_WEIGHTS = (0.35, 0.45, 0.55, 0.65)
LEXICAL_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_SCORES = (0.25, 0.3, 0.35, 0.4, 0.45)
MAX_REFUSED = 0.10  # answer settings may refuse at most this share of answerable training questions
# Support (rag/answer/support.py): its scorer's blend, and the score below which an answer is weak.
SUPPORT_LEXICAL_WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
WEAK_THRESHOLDS = tuple(round(0.15 + 0.025 * i, 3) for i in range(23))  # 0.15 .. 0.70


def retrieval_outcomes(
    retriever: Retriever, questions: Sequence[Question], mode: Mode = "hybrid"
) -> Outcomes:
    """hit@1/3/5/10 and reciprocal rank@10 per question (NaN for unanswerable questions)."""
    return ranks_to_outcomes(evaluate(retriever, questions, mode).ranks, questions)


def ranks_to_outcomes(ranks: Mapping[str, int | None], questions: Sequence[Question]) -> Outcomes:
    n = len(questions)
    out = {f"hit@{k}": np.full(n, np.nan) for k in KS}
    out["mrr@10"] = np.full(n, np.nan)
    for i, q in enumerate(questions):
        if q.id not in ranks:
            continue
        rank = ranks[q.id]
        for k in KS:
            out[f"hit@{k}"][i] = float(rank is not None and rank <= k)
        out["mrr@10"][i] = 1.0 / rank if rank is not None and rank <= max(KS) else 0.0
    return out


def _groups(questions: Sequence[Question], key: Callable[[Question], str | None]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault(key(q) or "unlabelled", []).append(i)
    return {name: np.array(ids) for name, ids in sorted(groups.items())}


def _figures(outcomes: Outcomes, rows: np.ndarray | None = None) -> dict[str, Any]:
    out = {}
    for name, values in outcomes.items():
        v = values if rows is None else values[rows]
        v = v[~np.isnan(v)]
        if len(v):
            out[name] = figure(v.tolist())
    return out


def summarize(outcomes: Outcomes, questions: Sequence[Question]) -> dict[str, Any]:
    """Each metric with its interval: overall, by question kind, and by question set."""
    return {
        "all": _figures(outcomes),
        "by_kind": {k: _figures(outcomes, rows) for k, rows in _groups(questions, lambda q: q.kind).items()},
        "by_set": {
            k: _figures(outcomes, rows) for k, rows in _groups(questions, lambda q: q.question_set).items()
        },
    }


def compare(a: Outcomes, b: Outcomes) -> dict[str, Any]:
    """B against A, paired on the questions where both have a value, metric by metric."""
    out = {}
    for name in a:
        if name not in b:
            continue
        both = ~np.isnan(a[name]) & ~np.isnan(b[name])
        if both.any():
            out[name] = paired(a[name][both].tolist(), b[name][both].tolist()).summary()
    return out


def _mean(values: np.ndarray, rows: np.ndarray) -> float:
    v = values[rows]
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else 0.0


def _held_out(cv_outcomes: Outcomes, chosen: Iterable[tuple[Hashable, int]]) -> dict[str, Any]:
    return {
        "held_out": _figures(cv_outcomes),
        "chosen": [{"setting": list(k) if isinstance(k, tuple) else k, "folds": n} for k, n in chosen],
    }


def cross_validate_retrieval(
    retriever: Retriever, questions: Sequence[Question], k: int = 5, repeats: int = 3
) -> dict[str, Any]:
    """Choose the dense weight on training folds (by hit@5 + MRR@10), score it on held-out ones."""
    original = retriever.weights
    outcomes: dict[Hashable, Outcomes] = {}
    try:
        for w in DENSE_WEIGHTS:
            retriever.weights = dataclasses.replace(original, bm25=round(1.0 - w, 3), sentence=w)
            outcomes[w] = retrieval_outcomes(retriever, questions)
    finally:
        retriever.weights = original

    def choose(out: Table, train: np.ndarray) -> Hashable:
        return max(out, key=lambda c: _mean(out[c]["hit@5"], train) + _mean(out[c]["mrr@10"], train))

    cv = cross_validate(outcomes, choose, k, repeats)
    return {"setting": "dense_weight", **_held_out(cv.held_out, cv.chosen.most_common())}


def cross_validate_answers(
    answerer: Answerer, questions: Sequence[Question], k_passages: int = 5, k: int = 5, repeats: int = 3
) -> dict[str, Any]:
    """Choose the extractive backend's (lexical_weight, min_score) on training folds and score the
    choice on held-out ones. The rule: the highest abstention + gold rate among settings that refuse
    at most MAX_REFUSED of the answerable training questions (the least refusing one if none does)."""
    prepared = [answerer.prepare(q.question, k_passages) for q in questions]
    base = answerer.backend
    if not isinstance(base, ExtractiveBackend):
        raise TypeError("answer settings are cross-validated for the extractive backend only")
    outcomes: dict[Hashable, Outcomes] = {}
    for lw in LEXICAL_WEIGHTS:
        for ms in MIN_SCORES:
            options = base.options.model_copy(update={"lexical_weight": lw, "min_score": ms})
            backend = ExtractiveBackend(base.settings, options)
            trial = Answerer(backend, answerer.retriever)
            answers = [final_answer(trial.generate(p)) for p in prepared]
            outcomes[(lw, ms)] = answer_outcomes(questions, answers)

    def choose(out: Table, train: np.ndarray) -> Hashable:
        allowed = [c for c in out if _mean(out[c]["refused"], train) <= MAX_REFUSED]
        if not allowed:
            return min(out, key=lambda c: _mean(out[c]["refused"], train))
        return max(allowed, key=lambda c: _mean(out[c]["abstained"], train) + _mean(out[c]["gold"], train))

    cv = cross_validate(outcomes, choose, k, repeats)
    return {"setting": ["lexical_weight", "min_score"], **_held_out(cv.held_out, cv.chosen.most_common())}


def cross_validate_support(
    questions: Sequence[Question], answers: Sequence[Answer], settings: Settings, k: int = 5, repeats: int = 3
) -> dict[str, Any]:
    """Choose the support scorer's blend and the threshold below which an answer is flagged weak on
    training folds, and score them on held-out ones. The rule: the pair that best separates wrong
    answers from right ones (the share of wrong answers flagged minus the share of right ones)."""
    outcomes: dict[Hashable, Outcomes] = {}
    for lw in SUPPORT_LEXICAL_WEIGHTS:
        scorer = support_scorer(settings, lw)
        scores = [support_score(scorer, a.query, a.passages, a.citations) for a in answers]
        for t in WEAK_THRESHOLDS:
            weak = [level_of(s, a.abstained, t) == "weak" for s, a in zip(scores, answers, strict=True)]
            outcomes[(lw, t)] = answer_outcomes(questions, answers, weak)

    def choose(out: Table, train: np.ndarray) -> Hashable:
        def separation(c: Hashable) -> float:
            return _mean(out[c]["weak_when_wrong"], train) - _mean(out[c]["weak_when_right"], train)

        return max(out, key=separation)

    cv = cross_validate(outcomes, choose, k, repeats)
    held = _held_out(cv.held_out, cv.chosen.most_common())
    held["held_out"] = {m: held["held_out"][m] for m in ("weak_when_wrong", "weak_when_right")}
    return {"setting": ["support lexical_weight", "weak_below"], **held}


def retrieval_report(
    retriever: Retriever,
    questions: Sequence[Question],
    cv: int | None = None,
    against: Retriever | None = None,
) -> dict[str, Any]:
    """Figures for hybrid, BM25 alone and dense alone, each with intervals by kind and set, beside the
    plain-BM25 reference (paired: `wins` are questions where hybrid ranks the evidence higher);
    with `against`, that retriever paired against this one; with `cv`, the dense weight chosen by
    `cv`-fold cross-validation and its held-out figures."""
    report: dict[str, Any] = {}
    outcomes: dict[str, Outcomes] = {}
    for mode in ("hybrid", "bm25", "dense"):
        result = evaluate(retriever, questions, mode)
        outcomes[mode] = ranks_to_outcomes(result.ranks, questions)
        report[mode] = {**result.summary(), **summarize(outcomes[mode], questions)}
    reference = CharWindowBM25(list(retriever.index.documents.values()))
    baseline = ranks_to_outcomes(reference.ranks(questions), questions)
    report["bm25_1000_chars"] = summarize(baseline, questions)
    report["hybrid"]["paired_with_bm25_1000_chars"] = compare(baseline, outcomes["hybrid"])
    if against is not None:
        other = retrieval_outcomes(against, questions)
        report["against"] = {
            "hybrid": summarize(other, questions),
            "paired": compare(outcomes["hybrid"], other),  # wins: questions the other setting does better
        }
    if cv:
        report["cross_validated"] = cross_validate_retrieval(retriever, questions, k=cv)
    return report


def answer_report(
    answerer: Answerer,
    questions: Sequence[Question],
    k_passages: int = 5,
    cv: int | None = None,
    against: Answerer | None = None,
) -> dict[str, Any]:
    """Answer figures (gold contained, refusals, abstentions, valid markers) with intervals by kind
    and set; with `against`, another answerer paired against this one; with `cv`, the extractive
    backend's blend and threshold, and the support threshold, chosen by cross-validation and their
    held-out figures."""
    answers = [answerer.answer(q.question, k_passages) for q in questions]
    report = score_answers(answerer.backend.name, questions, answers).summary()
    outcomes = answer_outcomes(questions, answers)
    report.update(summarize(outcomes, questions))
    if against is not None:
        other = answer_outcomes(questions, [against.answer(q.question, k_passages) for q in questions])
        report["against"] = {"figures": summarize(other, questions), "paired": compare(outcomes, other)}
    if cv:
        report["cross_validated"] = cross_validate_answers(answerer, questions, k_passages, k=cv)
        settings = answerer.backend.settings
        report["cross_validated_support"] = cross_validate_support(questions, answers, settings, k=cv)
    return report
