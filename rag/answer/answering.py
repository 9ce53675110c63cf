"""Cited answers: retrieve, prompt, generate, check every [n], and fall back when a backend fails.

`Answerer(backend, retriever)` takes its collaborators in the constructor. `stream()` yields the
answer text as it is generated, then one final `Answer`; `answer()` returns just the `Answer`.

Markers are checked while the text streams (`MarkerRewriter`): ``[n]`` pointing at a passage that
was given is renumbered in order of first use, one pointing nowhere is dropped and reported in
`warnings`, so the streamed text and the final answer agree and the citations list holds only the
passages the answer uses. A backend that raises (timeout, refused connection, 5xx, malformed or
empty output) is replaced by the extractive answer with a warning saying what happened, and
whatever else breaks once text has started still ends the stream with an abstaining `Answer`, so
a caller streaming to a client never has to patch one up. An answer that is `ABSTAIN` comes with
the nearest passages as citations. `Answerer.for_backend` is how the API's routes and the CLI make
one: a backend by name, configured from settings and options.

Not here: HTTP (api/routes/ask.py), the prompt text (rag/answer/prompting.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.answer.archive import archive_question
from rag.answer.prompting import ABSTAIN, PostFacts, Prompt, Source, build_prompt
from rag.answer.rewrite import rewrite_query
from rag.answer.support import Support, measure_support, support_scorer
from rag.backends import Registry, create_backend
from rag.backends.base import LLMBackend
from rag.backends.extractive import ExtractiveBackend
from rag.errors import BackendError
from rag.ingest.chunking import Chunk
from rag.ingest.index import Index
from rag.search.retrieval import Filters, Hit, Retriever
from rag.settings import Settings
from rag.text import straighten_apostrophes

logger = logging.getLogger(__name__)

# [3], [1, 2], [1-2] as models write them; a marker may be split across streamed pieces.
_MARKER = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;–-]\s*\d{1,3})*)\s*\]")
_PARTIAL = re.compile(r"\[[\d\s,;–-]{0,12}$")
NEAREST = 3


@dataclass
class Answer:
    """A finished answer: text, the sources it cites (renumbered), and what went wrong."""

    text: str
    citations: list[Source]
    backend: str
    abstained: bool
    warnings: list[str]
    query: str
    took_ms: float = 0.0
    passages: list[Source] = field(default_factory=list)  # everything retrieved, as numbered for the model
    support: Support = Support("none", 0.0)  # how well the cited passages match (rag/answer/support.py)


@dataclass(frozen=True)
class Prepared:
    """A question ready to generate: the query used, the numbered passages and the prompt."""

    query: str
    sources: list[Source]
    prompt: Prompt
    started: float


class MarkerRewriter:
    """Renumber [n] markers in streamed text in order of first use; drop those citing nothing."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.by_n = {s.n: s for s in sources}
        self.order: list[int] = []  # original numbers, in order of first use
        self.warnings: list[str] = []
        self._held = ""

    def _replace(self, match: re.Match[str]) -> str:
        numbers: list[int] = []
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            bounds = re.split(r"\s*[–-]\s*", part)
            if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
                low, high = int(bounds[0]), int(bounds[1])
                numbers += list(range(low, high + 1)) if 0 < high - low < 10 else [low, high]
            elif part.isdigit():
                numbers.append(int(part))
        out = []
        for n in numbers:
            if n not in self.by_n:
                self.warnings.append(
                    f"removed citation marker [{n}]: it points at no passage "
                    f"({len(self.by_n)} passages were given)"
                )
                continue
            if n not in self.order:
                self.order.append(n)
            out.append(f"[{self.order.index(n) + 1}]")
        return "".join(out)

    def feed(self, piece: str) -> str:
        """Rewritten text that is safe to emit now (a trailing partial marker is held back)."""
        text = self._held + piece
        partial = _PARTIAL.search(text)
        cut = partial.start() if partial else len(text)
        self._held = text[cut:]
        return _MARKER.sub(self._replace, text[:cut])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return _MARKER.sub(self._replace, text)

    def cited(self) -> list[Source]:
        """The cited sources, renumbered 1.. in order of first use."""
        return [Source(i, self.by_n[n].chunk, self.by_n[n].score) for i, n in enumerate(self.order, 1)]


def final_answer(stream: Iterable[str | Answer]) -> Answer:
    """Drain an answer stream (`Answerer.stream` or `generate`) to the `Answer` it ends with."""
    for item in stream:
        if isinstance(item, Answer):
            return item
    raise AssertionError("an answer stream always ends with an Answer")  # pragma: no cover


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)  # "word [9]." with [9] removed -> "word."
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def is_abstention(text: str) -> bool:
    folded = straighten_apostrophes(text.strip().lower())
    return folded.startswith(ABSTAIN.lower().rstrip(".")) or not folded


def _post_facts(index: Index, chunk: Chunk) -> PostFacts | None:
    doc = index.documents.get(chunk.document_id)
    return PostFacts(len(doc.comments), len(doc.replies)) if doc is not None else None


def _post_first(
    index: Index, hits: list[Hit], document_id: str, filters: Filters | None, k: int
) -> list[Hit]:
    """`hits` with the opening passage of the post's body first (when the filters allow it)."""
    body = [c for c in index.chunks if c.document_id == document_id and c.kind == "post"]
    if not body:
        return hits
    opening = min(body, key=lambda c: c.start)
    if filters is not None and not filters.allows(opening):
        return hits
    score = next((h.score for h in hits if h.chunk.id == opening.id), 0.0)
    return [Hit(opening, score), *(h for h in hits if h.chunk.id != opening.id)][:k]


class Answerer:
    """Answers questions with `backend` over `retriever`; falls back to `fallback` (extractive)."""

    def __init__(
        self,
        backend: LLMBackend,
        retriever: Retriever,
        fallback: LLMBackend | None = None,
    ) -> None:
        self.backend = backend
        self.retriever = retriever
        self.fallback = fallback or ExtractiveBackend(backend.settings)
        self.scorer = support_scorer(backend.settings)  # alike for every backend and request
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop an answer being generated in another thread (its client went away): the backend's
        call is cut (`LLMBackend.cancel`) and no fallback runs. Safe from any thread, at any time."""
        self._cancelled.set()
        self.backend.cancel()

    @classmethod
    def for_backend(
        cls,
        name: str | None,
        settings: Settings,
        retriever: Retriever,
        options: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> Answerer:
        """An Answerer for the named backend (default: settings.backend), configured from settings
        and `options`; raises UnknownBackendError or InvalidRequestError (bad options)."""
        return cls(create_backend(name, settings, options, registry), retriever)

    def answer(
        self,
        question: str,
        k: int = 5,
        filters: Filters | None = None,
        history: Sequence[str] = (),
    ) -> Answer:
        """The finished answer to `question` (see `stream`)."""
        return final_answer(self.stream(question, k, filters, history))

    def prepare(
        self,
        question: str,
        k: int = 5,
        filters: Filters | None = None,
        history: Sequence[str] = (),
    ) -> Prepared:
        """Rewrite a follow-up, retrieve and build the prompt (raises before any text is produced).

        A question about the archive itself that names a post ("When was End of an Era
        published?") gets that post's opening passage first, so the answer can cite the post."""
        query = rewrite_query(question, history)
        index = self.retriever.index
        # The rewritten query, so "which post discusses that?" knows what "that" was.
        archive = archive_question(query, index.titles, history)
        hits = self.retriever.search(query, k, filters)
        if archive is not None and archive.document_id is not None:
            hits = _post_first(index, hits, archive.document_id, filters, k)
        sources = [
            Source(
                i,
                h.chunk,
                h.score,
                tuple(self.retriever.sentence_scores(query, h.chunk)),
                _post_facts(index, h.chunk),
            )
            for i, h in enumerate(hits, start=1)
        ]
        prompt = build_prompt(
            query, sources, original_question=question if query != question else None, archive=archive
        )
        return Prepared(query, sources, prompt, time.perf_counter())

    def stream(
        self,
        question: str,
        k: int = 5,
        filters: Filters | None = None,
        history: Sequence[str] = (),
    ) -> Iterator[str | Answer]:
        """Yield answer text as it is generated, then the final `Answer`.

        Args:
            question: the user's question (a follow-up is rewritten using `history`).
            k: passages retrieved and shown to the backend.
            filters: restrictions on what may be retrieved.
            history: earlier user turns, oldest first, for rewriting a follow-up.
        """
        return self.generate(self.prepare(question, k, filters, history))

    def generate(self, prepared: Prepared) -> Iterator[str | Answer]:
        """Text pieces, then the `Answer`, for a prepared question; never raises once started."""
        try:
            for item in self._generate(prepared):
                yield item
                if isinstance(item, Answer):
                    return
        except Exception as exc:  # noqa: BLE001 - a started stream must still end with its Answer
            logger.exception("answer stream failed")
            reason = type(exc).__name__  # the detail (paths, addresses) is in the log, not for clients
        else:  # pragma: no cover - _generate always ends with an Answer
            reason = "the answer ended early"
        yield Answer(
            text=ABSTAIN,
            citations=prepared.sources[:NEAREST],
            backend=self.backend.name,
            abstained=True,
            warnings=[f"answering failed ({reason})"],
            query=prepared.query,
        )

    def _generate(self, prepared: Prepared) -> Iterator[str | Answer]:
        started, query, sources, prompt = prepared.started, prepared.query, prepared.sources, prepared.prompt
        warnings: list[str] = []
        backend = self.backend
        rewriter = MarkerRewriter(sources)
        pieces: list[str] = []
        emitted = False
        if not sources:
            pieces = [ABSTAIN]
            warnings.append("no passage matched the question")
            yield ABSTAIN
        else:
            try:
                for piece in backend.generate(prompt, sources):
                    out = rewriter.feed(piece)
                    if out:
                        pieces.append(out)
                        emitted = True
                        yield out
                tail = rewriter.flush()
                if tail:
                    pieces.append(tail)
                    yield tail
                if not "".join(pieces).strip():
                    raise BackendError("the backend returned an empty answer")
            except Exception as exc:  # noqa: BLE001 - any backend failure becomes a fallback, never a 500
                if not isinstance(exc, BackendError):
                    logger.exception("backend %s failed unexpectedly", backend.name)
                # A BackendError's message is written for clients; anything else may hold paths or
                # addresses, so clients get its type and the log gets the rest.
                reason = exc.message if isinstance(exc, BackendError) else type(exc).__name__
                rewriter = MarkerRewriter(sources)
                pieces = []
                if self._cancelled.is_set():  # the client went away: nobody to show a fallback to
                    warnings.append("answering was cancelled")
                else:
                    warnings.append(
                        f"the {backend.name} backend failed ({reason}); "
                        f"showing the {self.fallback.name} answer instead"
                    )
                    backend = self.fallback
                    if emitted:
                        yield "\n\n"
                    for piece in self.fallback.generate(prompt, sources):
                        out = rewriter.feed(piece)
                        pieces.append(out)
                        yield out
                    pieces.append(rewriter.flush())
        text = _tidy("".join(pieces))
        abstained = is_abstention(text)
        cited = rewriter.cited()
        if abstained:
            text = ABSTAIN
            cited = [Source(i, s.chunk, s.score) for i, s in enumerate(sources[:NEAREST], start=1)]
        elif not cited:
            warnings.append("the answer cites no passage")
        yield Answer(
            text=text,
            citations=cited,
            backend=backend.name,
            abstained=abstained,
            warnings=warnings + rewriter.warnings,
            query=query,
            took_ms=round((time.perf_counter() - started) * 1000.0, 3),
            passages=sources,
            support=measure_support(self.scorer, query, sources, cited, abstained),
        )
