"""Quality reports on the real index: intervals by kind and set, the BM25 reference, paired
comparisons and cross-validated choices (rag/eval/quality.py, rag/eval/answers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.answer.answering import Answerer
from rag.backends.extractive import ExtractiveBackend
from rag.errors import InvalidRequestError
from rag.eval.answers import answer_outcomes
from rag.eval.quality import (
    BM25_ALONE,
    FUSION_GRID,
    SUPPORT_LEXICAL_WEIGHTS,
    WEAK_THRESHOLDS,
    answer_report,
    compare,
    cross_validate_answers,
    ranks_to_outcomes,
    retrieval_report,
    set_splits,
    summarize,
)
from rag.eval.retrieval import Question, load_questions
from rag.search.retrieval import FusionWeights, Retriever
from rag.settings import Settings
from tests.conftest import DEV, QUESTION_SETS


def _some(n: int = 10) -> list[Question]:
    questions = load_questions(DEV)
    answerable = [q for q in questions if q.answerable][: n - 2]
    return answerable + [q for q in questions if not q.answerable][:2]


def test_load_questions_records_the_set_each_came_from() -> None:
    assert {q.question_set for q in load_questions(DEV)} == {DEV.stem}


def test_outcomes_are_nan_where_a_metric_does_not_apply() -> None:
    qs = [Question("a", "q?", ["x"], ["ev"], kind="fact"), Question("b", "q?", [], [], kind="unanswerable")]
    out = ranks_to_outcomes({"a": 3}, qs)
    assert out["hit@1"][0] == 0.0 and out["hit@3"][0] == 1.0 and out["mrr@10"][0] == 1 / 3
    assert np.isnan(out["hit@5"][1])
    summary = summarize(out, qs)
    assert summary["all"]["hit@3"]["n"] == 1
    assert set(summary["by_kind"]) == {"fact", "unanswerable"}
    assert "hit@3" not in summary["by_kind"]["unanswerable"]


def test_compare_pairs_only_questions_both_sides_scored() -> None:
    a = {"m": np.array([0.0, 1.0, np.nan])}
    b = {"m": np.array([1.0, 1.0, 0.0])}
    result = compare(a, b)["m"]
    assert (result["wins"], result["losses"], result["ties"]) == (1, 0, 1)
    assert result["difference"] == 0.5


def test_retrieval_report_gives_intervals_by_kind_and_set_beside_the_bm25_reference(
    retriever: Retriever,
) -> None:
    questions = _some()
    before = retriever.weights
    other = Retriever(retriever.index, retriever.embedder, FusionWeights(bm25=1.0, sentence=0.0))
    report = retrieval_report(retriever, questions, cv=2, against=other)
    hybrid = report["hybrid"]
    assert hybrid["questions"] == 8
    assert hybrid["all"]["hit@5"]["n"] == 8
    low, high = hybrid["all"]["mrr@10"]["ci95"]
    assert low <= hybrid["all"]["mrr@10"]["value"] <= high
    assert set(hybrid["by_set"]) == {DEV.stem}
    assert "hit@5" in report["bm25_1000_chars"]["all"]
    paired = hybrid["paired_with_bm25_1000_chars"]["hit@5"]
    assert paired["wins"] + paired["losses"] + paired["ties"] == 8
    against = report["against"]["paired"]["mrr@10"]
    assert against["wins"] + against["losses"] + against["ties"] == 8
    assert sum(c["folds"] for c in report["cross_validated"]["chosen"]) == 2 * 3
    assert retriever.weights == before  # the cross-validation put the weights back
    assert retriever.fusion == "adaptive"


def test_retrieval_report_cross_validates_fusions_with_each_set_held_out(retriever: Retriever) -> None:
    questions = [q for path in QUESTION_SETS[1:] for q in load_questions(path)[:6]]  # tune and reworded
    report = retrieval_report(retriever, questions, cv_by_set=True)
    by_set = report["cross_validated_by_set"]["by_set"]
    assert set(by_set) == {"tune", "reworded"}
    grid = [list(f) for f in FUSION_GRID]
    for figures in by_set.values():
        assert figures["chosen"] in grid
        assert set(figures) == {"chosen", "hit@5", "mrr@10"}
    table = report["fusions"]
    assert set(table) == {f"{name} {w}" for name, w in FUSION_GRID}
    alone = table[f"{BM25_ALONE[0]} {BM25_ALONE[1]}"]["all"]["mrr@10"]["paired_with_bm25_alone"]
    assert (alone["wins"], alone["losses"]) == (0, 0)
    for row in table.values():
        assert set(row) == {"all", "tune", "reworded"}
    by_fusion = report["cross_validated_by_set"]["by_fusion"]
    assert set(by_fusion) == {"weighted", "rrf", "adaptive"}
    for name, held in by_fusion.items():
        assert all(figures["chosen"][0] == name for figures in held["by_set"].values())
        paired = held["paired_with_bm25_alone"]["mrr@10"]
        assert paired["wins"] + paired["losses"] + paired["ties"] == held["held_out"]["mrr@10"]["n"]
    assert "cross_validated" not in report  # no --cv: only the folds by set


def test_cross_validation_by_set_needs_two_sets() -> None:
    with pytest.raises(InvalidRequestError, match="at least two files"):
        set_splits(load_questions(DEV))


def test_answer_outcomes_mark_gold_refusals_and_abstentions(retriever: Retriever, settings: Settings) -> None:
    questions = _some(6)
    answerer = Answerer(ExtractiveBackend(settings), retriever)
    answers = [answerer.answer(q.question) for q in questions]
    out = answer_outcomes(questions, answers)
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        if q.answerable:
            assert out["refused"][i] == float(a.abstained)
            assert np.isnan(out["abstained"][i])
        else:
            assert out["abstained"][i] == float(a.abstained)
            assert np.isnan(out["gold"][i])
    assert np.nanmin(out["markers_valid"]) == 1.0
    # every answer given counts once for support: weak when right or weak when wrong
    given = [not a.abstained for a in answers]
    counted = ~np.isnan(out["weak_when_right"]) | ~np.isnan(out["weak_when_wrong"])
    assert counted.tolist() == given
    assert np.isnan(out["weak_when_right"] + out["weak_when_wrong"]).all()  # never both


def test_answer_report_cross_validates_the_extractive_threshold(
    retriever: Retriever, settings: Settings
) -> None:
    questions = _some(10)
    answerer = Answerer(ExtractiveBackend(settings), retriever)
    strict = Answerer(ExtractiveBackend(settings, ExtractiveBackend.Options(min_score=0.9)), retriever)
    report = answer_report(answerer, questions, cv=2, against=strict)
    assert report["all"]["gold"]["n"] == 8
    assert report["all"]["abstained"]["n"] == 2
    # a stricter threshold refuses every question the default refuses, and more
    assert report["against"]["paired"]["refused"]["losses"] == 0
    assert report["against"]["paired"]["refused"]["wins"] > 0
    assert report["against"]["figures"]["all"]["refused"]["value"] > report["all"]["refused"]["value"]
    cv = report["cross_validated"]
    assert cv["setting"] == ["lexical_weight", "min_score"]
    assert set(cv["held_out"]) >= {"gold", "refused", "abstained"}
    support = report["cross_validated_support"]
    assert support["setting"] == ["support lexical_weight", "weak_below"]
    assert set(support["held_out"]) == {"weak_when_wrong", "weak_when_right"}
    chosen = [tuple(c["setting"]) for c in support["chosen"]]
    assert all(lw in SUPPORT_LEXICAL_WEIGHTS and t in WEAK_THRESHOLDS for lw, t in chosen)
    assert sum(c["folds"] for c in support["chosen"]) == 2 * 3


def test_cross_validate_answers_needs_the_extractive_backend(
    retriever: Retriever, settings: Settings
) -> None:
    from tests.scripted import ScriptedBackend

    answerer = Answerer(ScriptedBackend(settings), retriever)
    with pytest.raises(TypeError, match="extractive"):
        cross_validate_answers(answerer, _some(4), k=2)
