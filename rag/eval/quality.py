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
  chosen on k-1 folds and scored on the held-out fold, repeated over reshuffles, or (retrieval and
  answers) chosen on all question sets but one and scored on that one, for each set; the figure
  reported is the held-out one;
- `fusion_table`: every fusion cross-validation chooses among, by set and paired with BM25 alone.

Not here: how a single question is scored (rag/eval/retrieval.py, rag/eval/answers.py), the
statistics themselves (rag/eval/stats.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from rag.answer.answering import Answer, Answerer, final_answer
from rag.answer.support import level_of, support_score, support_scorer
from rag.backends.extractive import ExtractiveBackend
from rag.errors import InvalidRequestError
from rag.eval.answers import answer_outcomes, score_answers
from rag.eval.baseline import CharWindowBM25
from rag.eval.retrieval import KS, Question, evaluate
from rag.eval.stats import CrossValidated, Table, cross_validate, figure, paired
from rag.search.retrieval import FUSIONS, Fusion, Mode, Retriever
from rag.settings import Settings

Outcomes = dict[str, np.ndarray]  # metric -> (n_questions,) float; NaN where the metric does not apply

# Grids searched by cross-validation. Retrieval: how the signals are fused, and the dense (sentence)
# signal's share (BM25 gets the rest). Answers: the extractive backend's blend and refusal threshold.
DENSE_WEIGHTS = (0.15, 0.25, 0.35, 0.45, 0.55, 0.65)
RRF_WEIGHTS = (0.3, 0.5)
ADAPTIVE_WEIGHTS = (0.35, 0.55, 0.75, 1.0)  # the dense share for a query none of whose words BM25 finds
# Simplest first, since a tie goes to the earlier: BM25 alone (dense weight 0: the dense signals
# only bring candidates into the pool, and BM25 orders them), the z-score blend, reciprocal ranks,
# and the blend whose dense share each query scales (see Retriever._query_weights).
FUSION_GRID: tuple[tuple[Fusion, float], ...] = (
    ("weighted", 0.0),
    *(("weighted", w) for w in DENSE_WEIGHTS),
    *(("rrf", w) for w in RRF_WEIGHTS),
    *(("adaptive", w) for w in ADAPTIVE_WEIGHTS),
)
BM25_ALONE = FUSION_GRID[0]
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


def metric_figures(outcomes: Outcomes, rows: np.ndarray | None = None) -> dict[str, Any]:
    """Each metric's figure with its interval, over `rows` (all questions) where it has a value."""
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
        "all": metric_figures(outcomes),
        "by_kind": {
            k: metric_figures(outcomes, rows) for k, rows in _groups(questions, lambda q: q.kind).items()
        },
        "by_set": {
            k: metric_figures(outcomes, rows)
            for k, rows in _groups(questions, lambda q: q.question_set).items()
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


def _sets(questions: Sequence[Question]) -> dict[str, np.ndarray]:
    return _groups(questions, lambda q: q.question_set)


def set_splits(questions: Sequence[Question]) -> list[list[np.ndarray]]:
    """One round of folds, one fold per question set: each set is held out once."""
    sets = _sets(questions)
    if len(sets) < 2:
        raise InvalidRequestError(
            f"cross-validation by set needs questions from at least two files (got {', '.join(sets)})"
        )
    return [list(sets.values())]


def _name(setting: Hashable) -> Any:
    return list(setting) if isinstance(setting, tuple) else setting


def _held_out(
    cv: CrossValidated, questions: Sequence[Question], by_set: bool, metrics: Sequence[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "held_out": metric_figures(cv.held_out),
        "chosen": [{"setting": _name(k), "folds": n} for k, n in cv.chosen.most_common()],
    }
    if by_set:  # one fold per set, in _sets order: what was chosen without it, and how it did there
        out["by_set"] = {
            name: {
                "chosen": _name(pick),
                **{
                    m: f
                    for m, f in metric_figures(cv.held_out, rows).items()
                    if metrics is None or m in metrics
                },
            }
            for (name, rows), pick in zip(_sets(questions).items(), cv.picks, strict=True)
        }
    return out


def fusion_outcomes(retriever: Retriever, questions: Sequence[Question]) -> dict[Hashable, Outcomes]:
    """Retrieval outcomes of every (fusion, dense weight) in FUSION_GRID; the retriever is put back."""
    fusion, weights = retriever.fusion, retriever.weights
    outcomes: dict[Hashable, Outcomes] = {}
    try:
        for name, w in FUSION_GRID:
            retriever.fusion = name
            retriever.weights = dataclasses.replace(weights, bm25=round(1.0 - w, 3), sentence=w)
            outcomes[(name, w)] = retrieval_outcomes(retriever, questions)
    finally:
        retriever.fusion, retriever.weights = fusion, weights
    return outcomes


def fusion_table(outcomes: Mapping[Hashable, Outcomes], questions: Sequence[Question]) -> dict[str, Any]:
    """hit@5 and MRR@10 of each fusion, overall and by set, paired with BM25 alone (`wins`:
    questions the fusion ranks higher), so a fusion that helps one set and costs another shows."""
    metrics = ("hit@5", "mrr@10")
    groups = {"all": np.arange(len(questions)), **_sets(questions)}
    base = outcomes[BM25_ALONE]
    table: dict[str, Any] = {}
    for key, out in outcomes.items():
        fusion, w = key if isinstance(key, tuple) else (key, None)
        table[f"{fusion} {w}"] = {
            group: {
                m: {
                    **metric_figures({m: out[m]}, rows)[m],
                    "paired_with_bm25_alone": compare({m: base[m][rows]}, {m: out[m][rows]})[m],
                }
                for m in metrics
            }
            for group, rows in groups.items()
        }
    return table


def cross_validate_retrieval(
    retriever: Retriever,
    questions: Sequence[Question],
    k: int = 5,
    repeats: int = 3,
    by_set: bool = False,
    outcomes: Mapping[Hashable, Outcomes] | None = None,
) -> dict[str, Any]:
    """Choose the fusion and dense weight (FUSION_GRID) on training folds, by hit@5 + MRR@10, and
    score the choice on held-out ones: k random folds, or (`by_set`) each question set held out
    in turn. `by_fusion` does the same within each fusion alone (only its weight is chosen), paired
    with BM25 alone: what a method is worth once its weight must carry to unseen questions.
    `outcomes` are `fusion_outcomes` already computed."""
    table = outcomes if outcomes is not None else fusion_outcomes(retriever, questions)
    metrics = ("hit@5", "mrr@10")

    def choose(out: Table, train: np.ndarray) -> Hashable:
        return max(out, key=lambda c: _mean(out[c]["hit@5"], train) + _mean(out[c]["mrr@10"], train))

    splits = set_splits(questions) if by_set else None
    cv = cross_validate(table, choose, k, repeats, splits)
    report = {"setting": ["fusion", "dense_weight"], **_held_out(cv, questions, by_set, metrics)}
    report["by_fusion"] = {}
    for name in FUSIONS:
        own: dict[Hashable, Outcomes] = {
            key: out for key, out in table.items() if isinstance(key, tuple) and key[0] == name
        }
        if not own:
            continue
        alone = cross_validate(own, choose, k, repeats, splits)
        held = {m: alone.held_out[m] for m in metrics}
        report["by_fusion"][name] = {
            **_held_out(alone, questions, by_set, metrics),
            "held_out": metric_figures(held),
            "paired_with_bm25_alone": compare({m: table[BM25_ALONE][m] for m in metrics}, held),
        }
    return report


def cross_validate_answers(
    answerer: Answerer,
    questions: Sequence[Question],
    k_passages: int = 5,
    k: int = 5,
    repeats: int = 3,
    by_set: bool = False,
) -> dict[str, Any]:
    """Choose the extractive backend's (lexical_weight, min_score) on training folds (k random
    ones, or with `by_set` all question sets but one) and score the choice on the held-out
    fold. The rule: the highest abstention + gold rate among settings that refuse
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

    cv = cross_validate(outcomes, choose, k, repeats, set_splits(questions) if by_set else None)
    return {"setting": ["lexical_weight", "min_score"], **_held_out(cv, questions, by_set)}


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
    held = _held_out(cv, questions, by_set=False)
    held["held_out"] = {m: held["held_out"][m] for m in ("weak_when_wrong", "weak_when_right")}
    return {"setting": ["support lexical_weight", "weak_below"], **held}


def retrieval_report(
    retriever: Retriever,
    questions: Sequence[Question],
    cv: int | None = None,
    against: Retriever | None = None,
    cv_by_set: bool = False,
) -> dict[str, Any]:
    """Figures for hybrid, BM25 alone and dense alone, each with intervals by kind and set, beside the
    plain-BM25 reference (paired: `wins` are questions where hybrid ranks the evidence higher);
    with `against`, that retriever paired against this one; with `cv` or `cv_by_set`, every fusion
    of FUSION_GRID by set (`fusions`) and the one chosen by `cv`-fold cross-validation or with
    each set held out in turn, with its held-out figures."""
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
    if cv or cv_by_set:
        fusions = fusion_outcomes(retriever, questions)
        report["fusions"] = fusion_table(fusions, questions)
        if cv:
            report["cross_validated"] = cross_validate_retrieval(retriever, questions, cv, outcomes=fusions)
        if cv_by_set:
            report["cross_validated_by_set"] = cross_validate_retrieval(
                retriever, questions, by_set=True, outcomes=fusions
            )
    return report


def answer_report(
    answerer: Answerer,
    questions: Sequence[Question],
    k_passages: int = 5,
    cv: int | None = None,
    against: Answerer | None = None,
    cv_by_set: bool = False,
) -> dict[str, Any]:
    """Answer figures (gold contained, refusals, abstentions, valid markers) with intervals by kind
    and set; with `against`, another answerer paired against this one; with `cv` (k random folds)
    or `cv_by_set` (each set held out in turn), the extractive backend's blend and threshold chosen
    by cross-validation and their held-out figures (with `cv`, the support threshold's too)."""
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
    if cv_by_set:
        report["cross_validated_by_set"] = cross_validate_answers(
            answerer, questions, k_passages, by_set=True
        )
    return report
