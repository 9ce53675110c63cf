"""Retrieval evaluation over questions with verbatim evidence (the format of shared/eval/dev.jsonl).

Each line: ``{"id", "question", "answers": [..], "evidence": [..], "source", "where", "kind"}``.
A question is answerable when it has evidence. A retrieved passage *hits* when, after folding
whitespace, case and curly quotes, it contains an evidence string, or its first or second half
(cut at a word boundary, each half at least 15 characters), since chunk boundaries may split
evidence. Reports hit@1/3/5/10 and MRR@10 for hybrid retrieval and for BM25 and dense alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import InvalidRequestError
from rag.search.retrieval import Mode, Retriever
from rag.text import fold

KS = (1, 3, 5, 10)
MIN_HALF = 15


def evidence_variants(evidence: str) -> list[str]:
    """The folded evidence and, when both are long enough, its two halves cut at a word boundary."""
    whole = fold(evidence)
    variants = [whole]
    middle = len(whole) // 2
    cut = whole.rfind(" ", 0, middle + 1)
    if cut == -1:
        cut = whole.find(" ", middle)
    if cut != -1:
        first, second = whole[:cut].strip(), whole[cut + 1 :].strip()
        if len(first) >= MIN_HALF and len(second) >= MIN_HALF:
            variants += [first, second]
    return variants


def passage_hits(passage: str, evidence: Iterable[str]) -> bool:
    folded = fold(passage)
    return any(v in folded for e in evidence for v in evidence_variants(e))


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]
    evidence: list[str]
    source: str | None = None
    where: str | None = None
    kind: str | None = None
    question_set: str | None = None  # the file it came from (its stem), for figures per set

    @property
    def answerable(self) -> bool:
        return bool(self.evidence)


def load_questions(path: Path) -> list[Question]:
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            questions.append(
                Question(
                    id=str(data["id"]),
                    question=data["question"],
                    answers=list(data.get("answers") or []),
                    evidence=list(data.get("evidence") or []),
                    source=data.get("source"),
                    where=data.get("where"),
                    kind=data.get("kind"),
                    question_set=path.stem,
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(f"{path}:{number}: not a question record ({exc})") from exc
    return questions


@dataclass
class Report:
    mode: str
    questions: int
    hit: dict[int, float]
    mrr10: float
    ranks: dict[str, int | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"hit@{k}": round(v, 3) for k, v in self.hit.items()}
        out["mrr@10"] = round(self.mrr10, 3)
        out["questions"] = self.questions
        return out


def evaluate(retriever: Retriever, questions: Sequence[Question], mode: Mode = "hybrid") -> Report:
    answerable = [q for q in questions if q.answerable]
    ranks: dict[str, int | None] = {}
    for q in answerable:
        hits = retriever.search(q.question, k=max(KS), mode=mode)
        ranks[q.id] = next(
            (r for r, h in enumerate(hits, start=1) if passage_hits(h.chunk.text, q.evidence)), None
        )
    n = max(1, len(answerable))
    hit = {k: sum(1 for r in ranks.values() if r is not None and r <= k) / n for k in KS}
    mrr = sum(1.0 / r for r in ranks.values() if r is not None and r <= 10) / n
    return Report(mode, len(answerable), hit, mrr, ranks)
