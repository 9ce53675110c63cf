"""Statistics for evaluation: bootstrap intervals, paired comparisons and cross-validated selection.

A few dozen questions make every figure noisy, so each figure comes with a bootstrap 95% interval
(resampling questions), two configurations are compared on the same questions (how many each wins,
and an interval for the mean difference), and settings are chosen by k-fold cross-validation: the
choice is made on the training folds and scored on the held-out fold, so the reported figure is one
the choice never saw. Folds are random (k-fold) or given, such as one per question set: a choice
made on two sets and scored on the third shows whether it carries to questions written otherwise.
Numpy only; nothing here knows about retrieval or answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.errors import InvalidRequestError

RESAMPLES = 2000
SEED = 0


def mean_ci(
    values: Sequence[float] | np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its bootstrap 95% percentile interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def figure(values: Sequence[float]) -> dict[str, Any]:
    """A rate or mean with its interval and count, rounded for printing."""
    m, lo, hi = mean_ci(values)
    return {"value": round(m, 3), "ci95": [round(lo, 3), round(hi, 3)], "n": len(values)}


@dataclass(frozen=True)
class Paired:
    """B against A on the same questions: per-question wins, losses, ties, and the mean difference."""

    wins: int  # questions where B scores higher
    losses: int  # questions where B scores lower
    ties: int
    difference: float  # mean(B - A)
    ci95: tuple[float, float]

    @property
    def significant(self) -> bool:
        """True when the interval of the difference excludes zero."""
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def summary(self) -> dict[str, Any]:
        return {
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "difference": round(self.difference, 3),
            "ci95": [round(self.ci95[0], 3), round(self.ci95[1], 3)],
            "significant": self.significant,
        }


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compare per-question scores `b` against `a` (same questions, same order)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same questions ({len(x)} against {len(y)})")
    d = y - x
    m, lo, hi = mean_ci(d)
    return Paired(int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum()), m, (lo, hi))


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """`k` disjoint held-out index sets covering range(n), shuffled by `seed`."""
    if not 2 <= k <= n:
        raise InvalidRequestError(
            f"cross-validation needs 2 <= folds <= questions (got {k} folds, {n} questions)"
        )
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


# configuration -> metric -> per-question values (the same questions, in the same order, everywhere)
Table = Mapping[Hashable, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class CrossValidated:
    """Held-out outcomes of a selection rule under cross-validation."""

    held_out: dict[str, np.ndarray]  # metric -> per-question value, averaged over repeats
    chosen: Counter[Hashable]  # how often each configuration was chosen, over all folds
    picks: list[Hashable]  # the configuration chosen for each held-out fold, in the splits' order


def cross_validate(
    outcomes: Table,
    choose: Callable[[Table, np.ndarray], Hashable],
    k: int = 5,
    repeats: int = 3,
    splits: Sequence[Sequence[np.ndarray]] | None = None,
) -> CrossValidated:
    """Score a selection rule by cross-validation.

    Args:
        outcomes: for each configuration, metric name -> per-question values (same questions).
        choose: picks a configuration given `outcomes` and the training question indices.
        k: folds; repeats: reshuffles, averaged so one lucky split does not decide.
        splits: the held-out folds instead, as rounds of disjoint index sets that each cover
            every question (e.g. one round with one fold per question set).
    """
    first = next(iter(outcomes.values()))
    n = len(next(iter(first.values())))
    rounds = [folds(n, k, seed=r) for r in range(repeats)] if splits is None else splits
    sums = {name: np.zeros(n) for name in first}
    picks: list[Hashable] = []
    for tests in rounds:
        for test in tests:
            train = np.setdiff1d(np.arange(n), test)
            pick = choose(outcomes, train)
            picks.append(pick)
            for name in sums:
                sums[name][test] += outcomes[pick][name][test]
    return CrossValidated({name: s / len(rounds) for name, s in sums.items()}, Counter(picks), picks)
