"""Hybrid retrieval: quality over every question set, adaptive fusion, filters, de-duplication,
edge queries."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import InvalidRequestError
from rag.eval.retrieval import evaluate, evidence_variants, fold, load_questions, passage_hits
from rag.search.dedup import duplicate_of
from rag.search.retrieval import Filters, FusionWeights, Retriever, _Columns, _top_positive
from tests.conftest import QUESTION_SETS


def test_retrieval_hybrid_beats_bm25_alone_over_every_question_set(retriever: Retriever) -> None:
    """Pooled over every set, and no set with fewer hits in the top 5 than BM25 alone gets."""
    pooled = {"hybrid": [0.0, 0.0], "bm25": [0.0, 0.0]}
    for path in QUESTION_SETS:
        questions = load_questions(path)
        hybrid = evaluate(retriever, questions, "hybrid")
        bm25 = evaluate(retriever, questions, "bm25")
        assert hybrid.hit[5] >= bm25.hit[5], path.stem
        for mode, report in (("hybrid", hybrid), ("bm25", bm25)):
            pooled[mode][0] += report.hit[5] * report.questions
            pooled[mode][1] += report.mrr10 * report.questions
    assert pooled["hybrid"][0] > pooled["bm25"][0]
    assert pooled["hybrid"][1] > pooled["bm25"][1]


def _weights(retriever: Retriever, query: str) -> FusionWeights:
    bm25 = retriever.index.bm25.scores(query)
    return retriever._query_weights(query, bm25, list(range(len(bm25))), "hybrid")


def test_retrieval_adaptive_fusion_scales_the_dense_share_by_what_bm25s_best_passage_misses(
    retriever: Retriever,
) -> None:
    assert retriever.fusion == "adaptive"
    full = retriever.weights
    # every word in BM25's best passage: BM25 alone orders the results
    held = _weights(retriever, "Gauke retains the sentiment")
    assert (held.sentence, held.dense) == (0.0, 0.0)
    assert held.bm25 == pytest.approx(full.bm25 + full.sentence + full.dense)
    # no word indexed anywhere: the dense share in full
    assert _weights(retriever, "zzzzqqq xxyyzz") == full
    # some words found, others not: in between
    some = _weights(retriever, "Gauke zzzzqqq")
    assert 0.0 < some.sentence < full.sentence


def test_retrieval_adaptive_fusion_orders_by_bm25_when_its_best_passage_holds_every_word(
    retriever: Retriever,
) -> None:
    query = "Gauke retains the sentiment"
    hybrid = [h.chunk.id for h in retriever.search(query, k=5)]
    bm25 = [h.chunk.id for h in retriever.search(query, k=5, mode="bm25")]
    assert hybrid == bm25


def test_retrieval_results_are_distinct_passages(retriever: Retriever) -> None:
    for query in ["Working Links collapse", "probation renationalisation", "Gauke speech on sentencing"]:
        hits = retriever.search(query, k=20)
        groups = [retriever.index.dup_of[retriever.index.by_id[h.chunk.id]] or h.chunk.id for h in hits]
        assert len(groups) == len(set(groups))
        assert len({h.chunk.id for h in hits}) == len(hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_dedup_groups_repeated_passages() -> None:
    para = "The failure of those reforms have led to poorer services for offenders and more risk."
    other = "A completely different sentence about probation officers and their caseloads today."
    assert duplicate_of([para, other, para + " Extra words.", other[:40]]) == [None, None, 0, None]


@pytest.mark.parametrize(
    "filters,check",
    [
        (Filters(kind=("reply",)), lambda c: c.kind == "reply"),
        (Filters(document_id=("003_ea05dc3451fe564a",)), lambda c: c.document_id == "003_ea05dc3451fe564a"),
        (Filters(source=("002_c9ebe3be5a93ccd6.txt",)), lambda c: c.source == "002_c9ebe3be5a93ccd6.txt"),
        (Filters(date_from="2020-01-01"), lambda c: c.date is not None and c.date >= "2020-01-01"),
        (
            Filters(date_to="2019-12-31", kind=("post",)),
            lambda c: c.kind == "post" and c.date <= "2019-12-31",
        ),
    ],
)
def test_retrieval_filters_restrict_every_result(
    retriever: Retriever, filters: Filters, check: object
) -> None:
    hits = retriever.search("probation staff and the MoJ", k=10, filters=filters)
    assert hits
    assert all(check(h.chunk) for h in hits)  # type: ignore[operator]


@pytest.mark.parametrize(
    "filters",
    [
        Filters(kind=("reply",)),
        Filters(kind=("post", "comment"), date_from="2019-06-01"),
        Filters(document_id=("003_ea05dc3451fe564a", "nope")),
        Filters(source=("002_c9ebe3be5a93ccd6.txt",), date_to="2020-12-31"),
        Filters(date_from="2019-01-01", date_to="2019-12-31"),
    ],
)
def test_retrieval_filter_mask_equals_filters_allows_on_every_chunk(
    retriever: Retriever, filters: Filters
) -> None:
    chunks = retriever.index.chunks
    mask = _Columns(chunks).allowed(filters)
    assert mask.tolist() == [filters.allows(c) for c in chunks]


def test_retrieval_bm25_candidates_are_the_top_positive_scores_ties_to_lower_ids() -> None:
    scores = np.array([0.0, 3.0, 1.0, 2.0, 2.0, -1.0, 2.0, 5.0], dtype=np.float32)
    assert sorted(_top_positive(scores, None, 3).tolist()) == [1, 3, 7]
    assert sorted(_top_positive(scores, None, 4).tolist()) == [1, 3, 4, 7]
    assert sorted(_top_positive(scores, None, 100).tolist()) == [1, 2, 3, 4, 6, 7]  # never a zero or below
    assert sorted(_top_positive(scores, np.array([0, 2, 4, 5, 6]), 2).tolist()) == [4, 6]


def test_retrieval_filter_matching_nothing_returns_empty(retriever: Retriever) -> None:
    assert retriever.search("probation", filters=Filters(document_id=("nope",))) == []


def test_retrieval_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="unknown kind 'tweet'"):
        Filters(kind=("tweet",))


@pytest.mark.parametrize("query", ["zzzzqqq xxyyzz", "!!!", "the and of", "café ünïcödé 日本語"])
def test_retrieval_odd_queries_still_answer(retriever: Retriever, query: str) -> None:
    hits = retriever.search(query, k=3)
    assert len(hits) == 3  # dense retrieval always has neighbours


def test_retrieval_empty_query_is_refused(retriever: Retriever) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        retriever.search("   ")


def test_eval_hit_rule_accepts_halves_and_folds_quotes() -> None:
    evidence = "Cameron promised you wouldn’t hear him “arguing to neuter judges’ sentencing powers”"
    assert passage_hits("...CAMERON promised you wouldn't   hear him ...", [evidence])
    assert passage_hits('him "arguing to neuter judges\' sentencing powers" - end', [evidence])
    assert not passage_hits("nothing relevant", [evidence])
    assert fold(" A\u2019B\n C ") == "a'b c"
    assert all(len(v) >= 15 for v in evidence_variants(evidence))
    assert evidence_variants("too short") == ["too short"]
