"""rag/answer/support.py: how well an answer's cited passages match its question, alike for every
backend, over the real index."""

from __future__ import annotations

import time

import pytest

from rag.answer.answering import Answerer, Prepared, final_answer
from rag.answer.prompting import ABSTAIN, Source, build_prompt
from rag.answer.support import WEAK_BELOW, Support
from rag.backends.extractive import ExtractiveBackend
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.scripted import ScriptedBackend, scripted_fixture  # noqa: F401

QUESTION = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"


def prepared(retriever: Retriever, question: str, *others: str) -> Prepared:
    """`question` with its best passage as [1] and the best passage for each of `others` after it."""
    hits = [retriever.search(q, 1)[0] for q in (question, *others)]
    sources = [Source(i, h.chunk, h.score) for i, h in enumerate(hits, start=1)]
    return Prepared(question, sources, build_prompt(question, sources), time.perf_counter())


def test_support_strong_when_the_cited_passage_answers_and_weak_when_it_does_not(
    scripted: type[ScriptedBackend], retriever: Retriever, settings: Settings
) -> None:
    ready = prepared(retriever, QUESTION, "pay progression for probation officers")
    answerer = Answerer(scripted(settings), retriever)
    scripted.enqueue("The inspectorate takes it on from April 2021 [1].")
    good = final_answer(answerer.generate(ready))
    scripted.enqueue("Pay progression was promised [2].")
    poor = final_answer(answerer.generate(ready))
    assert good.support.level == "strong" and good.support.score >= WEAK_BELOW
    assert poor.support.level == "weak" and poor.support.score < WEAK_BELOW
    assert 0.0 <= poor.support.score < good.support.score <= 1.0


def test_support_is_measured_on_the_passages_so_every_backend_citing_them_gets_the_same(
    scripted: type[ScriptedBackend], retriever: Retriever, settings: Settings
) -> None:
    extractive = Answerer(ExtractiveBackend(settings), retriever).answer(QUESTION)
    assert not extractive.abstained and extractive.support.level == "strong"
    # a model citing the same passages in its own words: the same numbers in the prompt it was given
    number = {s.chunk.id: s.n for s in extractive.passages}
    markers = "".join(f"[{number[c.chunk.id]}]" for c in extractive.citations)
    scripted.enqueue(f"In its own words {markers}.")
    paraphrase = Answerer(scripted(settings), retriever).answer(QUESTION)
    assert [c.chunk.id for c in paraphrase.citations] == [c.chunk.id for c in extractive.citations]
    assert paraphrase.support == extractive.support


def test_support_of_an_answer_citing_nothing_is_weak_with_score_zero(
    scripted: type[ScriptedBackend], retriever: Retriever, settings: Settings
) -> None:
    scripted.enqueue("Something true, but from nowhere.")
    answer = Answerer(scripted(settings), retriever).answer(QUESTION)
    assert answer.support == Support("weak", 0.0)
    assert "the answer cites no passage" in answer.warnings


@pytest.mark.parametrize("abstain_by", ["backend", "failure"])
def test_support_of_an_abstention_is_none(
    scripted: type[ScriptedBackend], retriever: Retriever, settings: Settings, abstain_by: str
) -> None:
    scripted.enqueue(ABSTAIN if abstain_by == "backend" else "")
    fallback = ExtractiveBackend(settings, ExtractiveBackend.Options(min_score=1.0))  # abstains too
    answer = Answerer(scripted(settings), retriever, fallback=fallback).answer(QUESTION)
    assert answer.abstained and answer.support.level == "none"
    assert 0.0 <= answer.support.score <= 1.0
