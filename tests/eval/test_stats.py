"""Bootstrap intervals, paired comparisons and k-fold cross-validation (rag/eval/stats.py)."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pytest

from rag.errors import InvalidRequestError
from rag.eval.stats import Table, cross_validate, figure, folds, mean_ci, paired


def test_mean_ci_brackets_the_mean_and_narrows_with_more_questions() -> None:
    few = [1.0, 0.0] * 10
    many = [1.0, 0.0] * 200
    m, lo, hi = mean_ci(few)
    assert lo < m == 0.5 < hi
    _, lo2, hi2 = mean_ci(many)
    assert hi2 - lo2 < hi - lo


def test_mean_ci_of_a_constant_is_that_constant() -> None:
    assert mean_ci([1.0] * 7) == (1.0, 1.0, 1.0)
    assert mean_ci([]) == (0.0, 0.0, 0.0)


def test_figure_is_the_rounded_mean_with_its_interval_and_count() -> None:
    result = figure([1.0, 1.0, 1.0, 0.0])
    assert result["value"] == 0.75 and result["n"] == 4
    low, high = result["ci95"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0


def test_paired_counts_wins_losses_and_ties() -> None:
    a = [0.0, 1.0, 1.0, 0.5]
    b = [1.0, 1.0, 0.0, 0.5]
    result = paired(a, b)
    assert (result.wins, result.losses, result.ties) == (1, 1, 2)
    assert result.difference == 0.0
    assert not result.significant


def test_paired_flags_a_difference_on_many_questions() -> None:
    a = [0.0] * 60
    b = [1.0] * 30 + [0.0] * 30
    result = paired(a, b)
    assert result.significant and result.ci95[0] > 0
    assert result.summary()["wins"] == 30


def test_paired_refuses_different_questions() -> None:
    with pytest.raises(ValueError, match="same questions"):
        paired([1.0, 0.0], [1.0])


def test_folds_are_disjoint_and_cover_every_question() -> None:
    parts = folds(23, 5, seed=1)
    assert len(parts) == 5
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(23))
    with pytest.raises(InvalidRequestError, match="folds"):
        folds(3, 5, seed=0)


def test_cross_validate_scores_each_question_only_by_a_choice_made_without_it() -> None:
    n = 20
    # "good" is better on the first half of the questions, "bad" on none: any sane rule picks "good".
    table: Table = {
        "good": {"score": np.array([1.0] * 10 + [0.0] * 10)},
        "bad": {"score": np.zeros(n)},
    }
    seen_train: list[np.ndarray] = []

    def choose(outcomes: Table, train: np.ndarray) -> Hashable:
        seen_train.append(train)
        return max(outcomes, key=lambda c: float(outcomes[c]["score"][train].mean()))

    result = cross_validate(table, choose, k=4, repeats=2)
    assert len(seen_train) == 8
    assert all(len(t) == 15 for t in seen_train)  # the held-out fold is never in the training set
    assert result.chosen == {"good": 8}
    assert result.held_out["score"].tolist() == table["good"]["score"].tolist()


def test_cross_validate_over_given_folds_holds_each_out_once_and_records_its_pick() -> None:
    # Two "sets": a config that wins on one and loses on the other is chosen only where the other
    # set trained the choice, so the held-out figure shows it does not carry across sets.
    table: Table = {
        "a": {"score": np.array([1.0, 1.0, 0.0, 0.0])},
        "b": {"score": np.array([0.0, 0.0, 1.0, 1.0])},
    }
    splits = [[np.array([0, 1]), np.array([2, 3])]]

    def choose(outcomes: Table, train: np.ndarray) -> Hashable:
        return max(outcomes, key=lambda c: float(outcomes[c]["score"][train].mean()))

    result = cross_validate(table, choose, splits=splits)
    assert result.picks == ["b", "a"]  # chosen without the fold it is scored on
    assert result.held_out["score"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert result.chosen == {"a": 1, "b": 1}
