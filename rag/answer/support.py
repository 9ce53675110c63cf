"""How well an answer is supported by what it cites: a score, and a level a reader can act on.

The score is the best match between the question (the query actually searched) and a sentence of
the passages the answer cites, scored by the extractive backend's sentence scorer with its own
blend (`LEXICAL_WEIGHT`): how much of the question's words the sentence covers (stemmed, rarer
words weighing more), and only sentences holding the kind of thing asked for count (a count for
"how many", a date for "when"). It is measured on the passages, not on the answer's wording, so it
means the same for every backend: a model's paraphrase is only as well supported as the passages
behind it. An answer citing nothing scores 0.

The level: ``none`` when the answer abstained (the score is then that of the nearest passages it
lists), ``weak`` when it answered but the score is below `WEAK_BELOW`, else ``strong``.
`LEXICAL_WEIGHT` and `WEAK_BELOW` were chosen together by cross-validation over every question set
(`rag eval --answers --cv 5`; README, "Quality on unseen questions"): the pair that best separates
answers holding no gold answer (or answering what the archive cannot) from answers holding one.
Closeness in meaning, which helps the extractive backend pick a sentence, does not tell those apart
(the questions the archive cannot answer are on its topics), so word cover alone scores support.

Not here: the answer itself (rag/answer/answering.py), the sentence scorer (rag/backends/extractive.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rag.answer.prompting import Source
from rag.backends.extractive import ExtractiveBackend
from rag.settings import Settings

Level = Literal["strong", "weak", "none"]

# Both chosen by 5-fold cross-validation (see the module docstring).
LEXICAL_WEIGHT = 1.0
WEAK_BELOW = 0.35


@dataclass(frozen=True)
class Support:
    """How well an answer's cited passages match its question (see the module docstring)."""

    level: Level
    score: float  # 0..1


def support_scorer(settings: Settings, lexical_weight: float = LEXICAL_WEIGHT) -> ExtractiveBackend:
    """The sentence scorer support is measured with: the same for every backend and request."""
    return ExtractiveBackend(settings, ExtractiveBackend.Options(lexical_weight=lexical_weight))


def support_score(
    scorer: ExtractiveBackend, query: str, passages: Sequence[Source], cited: Sequence[Source]
) -> float:
    """The best score `scorer` gives a sentence of a `cited` passage, ranked among all `passages`
    (so word rarity is judged over everything retrieved, as the extractive backend judges it)."""
    ids = {s.chunk.id for s in cited}
    return max((c.score for c in scorer.rank(query, passages) if c.source.chunk.id in ids), default=0.0)


def level_of(score: float, abstained: bool, weak_below: float = WEAK_BELOW) -> Level:
    if abstained:
        return "none"
    return "weak" if score < weak_below else "strong"


def measure_support(
    scorer: ExtractiveBackend,
    query: str,
    passages: Sequence[Source],
    cited: Sequence[Source],
    abstained: bool,
) -> Support:
    """The `Support` of an answer to `query` that cites `cited` out of the retrieved `passages`."""
    score = support_score(scorer, query, passages, cited)
    return Support(level_of(score, abstained), round(score, 3))
