"""The extractive backend: an answer made of the passages' own sentences, each cited, no model.

Every sentence of the retrieved passages is scored by how much of the question it covers
(stemmed content words, rarer words weighing more), with a small bonus for the passage's rank,
blended with how close it is in meaning (the similarity retrieval gave the sentence, carried in
`Source.sentences`), so a reworded question still finds its answer. A
sentence that is itself a question, or too short to say anything, is scored lower; when the best
one is a heading or a question ("Will staff be made redundant?") the sentence that follows it,
which usually holds the answer, is taken with it. A question that asks for a quantity ("how
many", "what share", "how much") only accepts sentences holding a number it does not already hold
(a year is not a count), one that asks for a date ("when did", "in what year") only sentences
holding a date or a year it does not already hold, and one that asks "who" only sentences naming
someone it does not name (a name, or people by what they do: "providers"): an on-topic sentence
without the kind of thing asked for is no answer, and quoting it would answer a question the
archive cannot. Places and organisations were tried the same way and cost gold answers (README,
"What changed, and what did not help").

It abstains with `ABSTAIN` when no sentence reaches `min_score` or none holds what a quantity,
date or "who" question asks for. `lexical_weight` and `min_score` were chosen by cross-validation
over every question set (`rag eval --answers --cv 5`, see README). A question about the archive
itself ("When was End of an Era published?", see rag/answer/archive.py) is answered from the
passages' post metadata instead. Sentences that read as instructions to an AI ("ignore previous
instructions"), and the rest of a passage holding one, are never quoted.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from rag.answer import archive
from rag.answer.prompting import ABSTAIN, Prompt, Source
from rag.backends.base import LLMBackend
from rag.text import (
    ANSWER_STOPWORDS,
    NAME_FILLERS,
    TERM_WORD,
    acronyms,
    proper_names,
    split_quotable,
    squash,
    stem,
    straighten_apostrophes,
    words,
)

# "How much" asks for an amount, written with digits, a currency or a magnitude ("five years" is not one).
_AMOUNT = re.compile(r"\d|£|\$|€|%|\bper ?cent\b|\b(million|billion|thousand|hundred|half)\b", re.IGNORECASE)
_HOW_MUCH = re.compile(r"\bhow much\b", re.IGNORECASE)
_QUANTITY = re.compile(
    r"\bhow many\b|\bwhat (share|proportion|percentage|number|fraction|amount|figure)\b|"
    r"\bwhat (was|is|were|are) the (\w+ ){0,2}(population|number|total|amount|cost|figure|share|"
    r"percentage|proportion|rate|profit|salary|budget)\b",
    re.IGNORECASE,
)
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instructions?|prompts?|rules)\b|\bsystem prompt\b|"
    r"\byou are now\b|\bas an ai\b",
    re.IGNORECASE,
)


def terms(text: str) -> list[str]:
    """Stemmed content words of `text`, lower-cased, stopwords removed."""
    words = TERM_WORD.findall(straighten_apostrophes(text.lower()))
    return [stem(w.strip(".,'")) for w in words if w.strip(".,'") not in ANSWER_STOPWORDS]


split_sentences = split_quotable  # the sentences an answer may quote


LEAD_WORDS = 12


def _leads_in(sentence: str) -> bool:
    """A sentence that introduces an answer rather than giving one."""
    bare = sentence.rstrip("\"'”’)] ")
    return bare.endswith(("?", ":", "...", "…")) or len(sentence.split()) < 8


def is_quantity_question(question: str) -> bool:
    return bool(_QUANTITY.search(question))


_DATE_QUESTION = re.compile(
    r"^\W*when (was|were|did|is|are|will|does|do|had|has)\b|"
    r"\b(in|on|by|from|until|since) (what|which) (year|date|month|day)\b|\b(what|which) (year|date|month)\b",
    re.IGNORECASE,
)
_DATE = re.compile(
    r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b|\b(19|20)\d\d\b|\b\d{1,2}(st|nd|rd|th)\b|"
    r"\b(yesterday|today|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)
# A count: digits, a percentage or a number word. Not "one", which is far more often a pronoun
# ("I for one") than an answer.
_COUNT = re.compile(
    r"\d(?:[\d,.]*\d)?%?|\bper ?cent\b|\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
    r"thirty|forty|fifty|hundred|thousand|million|billion|half|dozen)\b",
    re.IGNORECASE,
)
_YEAR = re.compile(r"(19|20)\d\d")


# "Who" asked as a question (not "the reader who said"): at the start, after a clause's punctuation
# ("Transforming Rehabilitation: who criticised it?") or after a preposition ("to whom").
_WHO_QUESTION = re.compile(
    r"(?:^|[,;:(]\s*|\b(?:to|by|from|with|for|of|at|on|against)\s+)(?:who|whom)\b", re.IGNORECASE
)
# People named by what they do, in the plural: "providers", "managers", "inspectors", "economists".
_AGENTS = re.compile(r"\b[a-z]{3,}(?:ers|ors|ists|ians)\b")

AnswerType = Literal["date", "count", "amount", "who"]
ANSWER_TYPES: tuple[AnswerType, ...] = ("date", "count", "amount", "who")


def _named(question: str) -> set[str]:
    """What `question` names: its words, and the acronyms of runs of them ("NPS" for "National
    Probation Service")."""
    return {w.lower() for w in words(question)} | acronyms(question)


def _new_names(named: set[str], text: str) -> list[str]:
    """Names in `text` that a question naming `named` (`_named`) does not already hold."""
    out = []
    for name in proper_names(text):
        parts = [w for w in words(name.lower().replace("’s", "").replace("'s", "")) if w not in NAME_FILLERS]
        if any(w not in named and w.removesuffix("s") not in named for w in parts):
            out.append(name)
    return out


def _names_someone(question: str) -> Callable[[str], bool]:
    asked, named = question.lower(), _named(question)
    return lambda text: (
        bool(_new_names(named, text)) or any(m.group(0) not in asked for m in _AGENTS.finditer(text))
    )


def answer_checks(question: str, types: Sequence[str] = ANSWER_TYPES) -> list[Callable[[str], bool]]:
    """What a sentence must hold to answer `question`, worked out once per question: a date or a
    count the question does not already hold, for "how much" an amount, for "who" someone the
    question does not name. Empty for questions that ask for no particular kind of thing. `types`
    limits which kinds are checked."""
    asked = question.lower()
    checks: list[Callable[[str], bool]] = []
    if _DATE_QUESTION.search(question):
        if "date" in types:
            checks.append(lambda text: any(m.group(0).lower() not in asked for m in _DATE.finditer(text)))
    elif is_quantity_question(question):
        if "count" in types:
            checks.append(
                lambda text: any(
                    m.group(0).lower() not in asked and not _YEAR.fullmatch(m.group(0))
                    for m in _COUNT.finditer(text)
                )
            )
    if "amount" in types and _HOW_MUCH.search(question):
        checks.append(lambda text: bool(_AMOUNT.search(text)))
    if "who" in types and _WHO_QUESTION.search(question):
        checks.append(_names_someone(question))
    return checks


def gives_answer_type(question: str, text: str, types: Sequence[str] = ANSWER_TYPES) -> bool:
    """True when `text` holds what `question` asks for (see `answer_checks`)."""
    return all(check(text) for check in answer_checks(question, types))


def similarity(text: str, sentences: Sequence[tuple[str, float]]) -> float | None:
    """How close `text` is in meaning to the question: the best similarity retrieval gave an
    indexed sentence that overlaps it (the index splits sentences a little differently), or None
    when the passage brought no sentence scores."""
    folded, best = squash(text), None
    for sentence, score in sentences:
        other = squash(sentence)
        if other and (other in folded or folded in other or other[:40] in folded or folded[:40] in other):
            best = score if best is None else max(best, score)
    return best


@dataclass(frozen=True)
class Candidate:
    score: float
    source: Source
    text: str  # the sentence, plus the one after it when the sentence only leads into the answer


class ExtractiveBackend(LLMBackend):
    """Quote the sentences that best answer the question, each followed by its [n]."""

    name = "extractive"
    aliases = ("extract", "default")
    supports_streaming = True

    class Options(LLMBackend.Options):
        # Quoting up to three sentences (each within `relative` of the best) holds a gold answer on
        # 7 more of 131 questions than two, and never fewer (README, "Answer quality").
        max_sentences: int = Field(3, ge=1, le=5, description="Most sentences quoted.")
        # Both chosen by 5-fold cross-validation over every question set (`rag eval --answers --cv
        # 5`): among settings refusing at most 10% of answerable training questions, the one that
        # abstains most on unanswerable ones and quotes a gold answer most often; 12 of 15 folds
        # chose these. Lexical cover alone refused reworded questions; meaning alone quoted
        # on-topic sentences that answer nothing.
        lexical_weight: float = Field(
            0.4, ge=0.0, le=1.0, description="Share of a score from word cover; the rest from meaning."
        )
        min_score: float = Field(
            0.35, ge=0.0, le=1.0, description="Abstain when no sentence scores this much."
        )
        relative: float = Field(
            0.8, ge=0.0, le=1.0, description="Later sentences must score this share of the best."
        )
        archive_questions: bool = Field(
            True,
            description="Answer questions about the archive itself (when a post was published, how many "
            "comments it has, which post discusses something) from its metadata.",
        )
        answer_types: tuple[AnswerType, ...] = Field(
            ANSWER_TYPES,
            description="Kinds of thing a quoted sentence must hold when the question asks for one.",
        )

    options: Options

    def rank(self, question: str, passages: Sequence[Source]) -> list[Candidate]:
        """Every usable sentence of `passages`, best answer first."""
        wanted = Counter(terms(question))
        if not wanted:
            return []
        # Rarer words (in these passages) say more about what is asked: IDF over the sentences.
        sentences = [(s, split_sentences(s.chunk.text)) for s in passages]
        df: Counter[str] = Counter()
        total = 0
        for _, sents in sentences:
            for sent in sents:
                df.update(set(terms(sent)))
                total += 1
        weight = {t: math.log(1 + (total + 1) / (df[t] + 1)) for t in wanted}
        norm = sum(weight.values()) or 1.0
        checks = answer_checks(question, self.options.answer_types)
        out: list[Candidate] = []
        for rank, (source, sents) in enumerate(sentences):
            if _INJECTION.search(" ".join(source.chunk.text.split())):
                continue  # a passage that tries to instruct a model is not quoted at all
            for i, sent in enumerate(sents):
                if len(sent.split()) < 4 or _INJECTION.search(sent):
                    continue
                text, j = sent, i + 1
                if _leads_in(sent):
                    # a heading or question: take what follows, up to a sentence's worth of words
                    while j < len(sents) and j <= i + 2 and not _INJECTION.search(sents[j]):
                        text, j = f"{text} {sents[j]}", j + 1
                        if len(text.split()) >= LEAD_WORDS:
                            break
                if not all(check(text) for check in checks):
                    continue
                have = set(terms(text))
                score = sum(weight[t] for t in wanted if t in have) / norm
                if sent.endswith("?") and text == sent:
                    score *= 0.5
                score += 0.03 / (1 + rank)
                # At lexical weight 1 (the support scorer's) the meaning would be multiplied by 0.
                meaning = similarity(text, source.sentences) if self.options.lexical_weight < 1 else None
                if meaning is not None:
                    score = self.options.lexical_weight * score + (1 - self.options.lexical_weight) * meaning
                out.append(Candidate(min(score, 1.0), source, text))
        out.sort(key=lambda c: (-c.score, len(c.text)))  # on a tie, the tighter quote
        return out

    def choose(self, question: str, passages: Sequence[Source], per_post: bool = False) -> list[Candidate]:
        """The sentences to quote, in the order they are cited; empty means abstain. With
        `per_post`, at most one sentence from each post."""
        ranked = self.rank(question, passages)
        if not ranked or ranked[0].score < self.options.min_score:
            return []
        best = ranked[0].score
        chosen: list[Candidate] = []
        for c in ranked:
            if len(chosen) == self.options.max_sentences or c.score < self.options.relative * best:
                break
            if any(c.text in d.text or d.text in c.text for d in chosen):
                continue
            if per_post and any(c.source.chunk.document_id == d.source.chunk.document_id for d in chosen):
                continue
            chosen.append(c)
        return chosen

    def about_the_archive(self, asked: archive.ArchiveQuestion, passages: Sequence[Source]) -> str | None:
        """The answer to a question about the archive itself, from the passages' post metadata; None
        when the passages do not hold the post it names (the question is then answered as any other)."""
        if asked.kind == "which_post":
            chosen = self.choose(asked.topic, passages, per_post=True)  # the best sentence of each post
            if not chosen:
                return ABSTAIN
            return " ".join(
                f"{archive.discussed_in(c.source.chunk.title, c.source.chunk.date, c.text)} [{c.source.n}]"
                for c in chosen
            )
        post = next((s for s in passages if s.chunk.document_id == asked.document_id), None)
        if post is None:
            return None
        title = post.chunk.title
        if asked.kind == "published":
            return f"{archive.published(title, post.chunk.date)} [{post.n}]"
        if post.post is None:
            return None
        return f"{archive.comment_count(title, post.post.comments, post.post.replies)} [{post.n}]"

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        if prompt.archive is not None and self.options.archive_questions:
            text = self.about_the_archive(prompt.archive, passages)
            if text is not None:
                yield text
                return
        chosen = self.choose(prompt.question, passages)
        if not chosen:
            yield ABSTAIN
            return
        for i, c in enumerate(chosen):
            yield f"{' ' if i else ''}{c.text} [{c.source.n}]"
