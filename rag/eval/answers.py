"""Answer evaluation over the dev questions: does the answer hold a gold answer, does it abstain
when it should, and does every [n] point at a citation that really contains the cited sentence.

For each answerable question, the answer *contains gold* when, after folding case, whitespace
and curly quotes, one of its ``answers`` strings occurs in it. For each unanswerable one (no
evidence), the answer must abstain. Marker validity: the text before each ``[n]`` (back to the
previous marker or the start) must occur, folded, in the text of citation n, or, for an answer
about the archive itself ("When was End of an Era published?"), open with the title, in quotes, of
the post citation n comes from: a statement about that post, whose citation carries its title and
date. Support: how often an
answer given is flagged weak, among answers holding a gold string and among the others.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.answer.answering import Answer, Answerer
from rag.answer.archive import quoted_title
from rag.eval.retrieval import Question
from rag.ingest.chunking import Chunk
from rag.text import fold

_SEGMENT = re.compile(r"(.*?)((?:\[\d+\])+)", re.DOTALL)


def _holds(sentence: str, chunk: Chunk) -> bool:
    """The cited passage holds the (folded) sentence, or the sentence is about its post."""
    return sentence in fold(chunk.text) or sentence.startswith(fold(quoted_title(chunk.title)))


def marker_checks(answer: Answer) -> list[bool]:
    """One bool per [n] in the answer: does citation n contain the sentence it follows?"""
    by_n = {s.n: s for s in answer.citations}
    out = []
    for match in _SEGMENT.finditer(answer.text):
        sentence = fold(match.group(1)).strip(" .,;:")
        for n in re.findall(r"\d+", match.group(2)):
            cited = by_n.get(int(n))
            out.append(bool(sentence) and cited is not None and _holds(sentence, cited.chunk))
    return out


@dataclass
class AnswerReport:
    backend: str
    answerable: int = 0
    contains_gold: int = 0
    unanswerable: int = 0
    abstained_unanswerable: int = 0
    abstained_answerable: int = 0
    markers: int = 0
    markers_valid: int = 0
    fallbacks: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def rate(a: int, b: int) -> float:
            return round(a / b, 3) if b else 0.0

        return {
            "backend": self.backend,
            "answer_contains_gold": rate(self.contains_gold, self.answerable),
            "answer_contains_gold_count": f"{self.contains_gold}/{self.answerable}",
            "abstained_on_unanswerable": f"{self.abstained_unanswerable}/{self.unanswerable}",
            "abstained_on_answerable": f"{self.abstained_answerable}/{self.answerable}",
            "markers_valid": rate(self.markers_valid, self.markers),
            "markers_valid_count": f"{self.markers_valid}/{self.markers}",
            "fallbacks": self.fallbacks,
            "missed": self.failures,
        }


def evaluate_answers(answerer: Answerer, questions: Sequence[Question], k: int = 5) -> AnswerReport:
    """Answer every question with `answerer` and score the answers (see module docstring)."""
    return score_answers(
        answerer.backend.name, questions, [answerer.answer(q.question, k) for q in questions]
    )


def score_answers(backend: str, questions: Sequence[Question], answers: Sequence[Answer]) -> AnswerReport:
    """Score answers already made by `backend`, one per question, in order."""
    report = AnswerReport(backend)
    for q, answer in zip(questions, answers, strict=True):
        if answer.backend != backend:
            report.fallbacks += 1
        checks = [] if answer.abstained else marker_checks(answer)
        report.markers += len(checks)
        report.markers_valid += sum(checks)
        if q.answerable:
            report.answerable += 1
            report.abstained_answerable += answer.abstained
            if contains_gold(answer.text, q):
                report.contains_gold += 1
            else:
                report.failures.append(q.id)
        else:
            report.unanswerable += 1
            report.abstained_unanswerable += answer.abstained
            if not answer.abstained:
                report.failures.append(q.id)
    return report


def answer_outcomes(
    questions: Sequence[Question], answers: Sequence[Answer], weak: Sequence[bool] | None = None
) -> dict[str, np.ndarray]:
    """Per question (NaN where it does not apply): `gold` (answerable: the answer holds a gold
    string), `refused` (answerable: it abstained), `abstained` (unanswerable: it abstained),
    `markers_valid` (the share of its [n] markers whose citation holds the cited sentence), and
    for answers given, whether their support is flagged weak (`weak`, by default their own
    `support.level`): `weak_when_right` for answers holding a gold string, `weak_when_wrong` for
    the others (no gold, or an answer to a question the archive cannot answer)."""
    n = len(questions)
    names = ("gold", "refused", "abstained", "markers_valid", "weak_when_right", "weak_when_wrong")
    out = {name: np.full(n, np.nan) for name in names}
    flags = weak if weak is not None else [a.support.level == "weak" for a in answers]
    for i, (q, answer, flagged) in enumerate(zip(questions, answers, flags, strict=True)):
        checks = [] if answer.abstained else marker_checks(answer)
        if checks:
            out["markers_valid"][i] = sum(checks) / len(checks)
        right = not answer.abstained and q.answerable and contains_gold(answer.text, q)
        if q.answerable:
            out["refused"][i] = float(answer.abstained)
            out["gold"][i] = float(right)
        else:
            out["abstained"][i] = float(answer.abstained)
        if not answer.abstained:
            out["weak_when_right" if right else "weak_when_wrong"][i] = float(flagged)
    return out


def contains_gold(text: str, question: Question) -> bool:
    folded = fold(text)
    return any(fold(a) in folded for a in question.answers)
