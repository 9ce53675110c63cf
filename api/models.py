"""Request and response models of the HTTP API: the contract scripts rely on.

These are separate from the library's dataclasses (`Chunk`, `Hit`) so the wire format can stay
stable while internals change; each response's `of` builds it from the library's result, for the
routes and for the CLI's answers over a local index alike. Every request model forbids unknown
fields, so a misspelt filter gets a 422 naming it instead of being silently ignored.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from rag.answer.answering import Answer
from rag.answer.support import WEAK_BELOW
from rag.ingest.chunking import Chunk
from rag.ingest.corpus import Kind, Node
from rag.ingest.index import Index
from rag.search import passages
from rag.search.quotes import Match
from rag.search.retrieval import Filters, Hit

KindName = Kind


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _whole_number(value: object) -> object:
    """JSON has one kind of number, and JSON Schema's `integer` (what /openapi.json says) includes
    4.0: take it as 4. A string, a fraction or a boolean is still refused by the strict `int`."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A count such as `k`: an integer in JSON's sense (4 or 4.0), never coerced from "5", 4.5 or true.
Count = Annotated[int, BeforeValidator(_whole_number)]


class SearchFilters(Strict):
    """Optional restrictions; a list matches any of its values."""

    document_id: list[str] | str | None = Field(None, description="Post id(s), e.g. 000_04b72ef4a6ddfc0f.")
    source: list[str] | str | None = Field(None, description="Source file name(s).")
    kind: list[KindName] | KindName | None = Field(None, description="post, comment and/or reply.")
    date_from: date | None = Field(None, description="Earliest post date, inclusive (YYYY-MM-DD).")
    date_to: date | None = Field(None, description="Latest post date, inclusive (YYYY-MM-DD).")

    @field_validator("date_from", "date_to", mode="before")
    @classmethod
    def _date_is_text(cls, value: object) -> object:
        # Pydantic would read a number as seconds since 1970 (0 is 1970-01-01): refuse, like any wrong type.
        if value is not None and not isinstance(value, str | date):
            raise ValueError("expected a date as YYYY-MM-DD text")
        return value

    def to_filters(self) -> Filters:
        def as_list(value: list[str] | str | None) -> tuple[str, ...]:
            if value is None:
                return ()
            return (value,) if isinstance(value, str) else tuple(value)

        return Filters(
            document_id=as_list(self.document_id),
            source=as_list(self.source),
            kind=as_list(self.kind),  # type: ignore[arg-type]
            date_from=self.date_from.isoformat() if self.date_from else None,
            date_to=self.date_to.isoformat() if self.date_to else None,
        )


class SearchRequest(Strict):
    query: str = Field(..., min_length=1, description="What to search for, in natural language.")
    k: Count = Field(5, ge=1, le=50, strict=True, description="How many passages to return.")
    filters: SearchFilters | None = None


class Citation(BaseModel):
    """Where a passage comes from: `raw_file_text[start:end]` is its text, up to whitespace."""

    document_id: str
    title: str
    date: str | None
    kind: KindName
    comment: int | None
    reply: int | None
    source: str
    start: int
    end: int

    @classmethod
    def of(cls, chunk: Chunk) -> Citation:
        return cls(
            document_id=chunk.document_id,
            title=chunk.title,
            date=chunk.date,
            kind=chunk.kind,
            comment=chunk.comment,
            reply=chunk.reply,
            source=chunk.source,
            start=chunk.start,
            end=chunk.end,
        )


class SearchResult(BaseModel):
    id: str
    text: str
    score: float
    citation: Citation


class SearchResponse(BaseModel):
    results: list[SearchResult]
    took_ms: float

    @classmethod
    def of(cls, hits: list[Hit], took_ms: float) -> SearchResponse:
        return cls(
            results=[
                SearchResult(
                    id=h.chunk.id, text=h.chunk.text, score=round(h.score, 6), citation=Citation.of(h.chunk)
                )
                for h in hits
            ],
            took_ms=round(took_ms, 3),
        )


class NodeText(BaseModel):
    """A whole post body, comment or reply, located in its raw file."""

    kind: KindName
    comment: int | None
    reply: int | None
    start: int
    end: int
    text: str

    @classmethod
    def of(cls, node: passages.NodeText) -> NodeText:
        n = node.node
        return cls(kind=n.kind, comment=n.comment, reply=n.reply, start=n.start, end=n.end, text=node.text)


class PassageContext(BaseModel):
    before: str = Field(description="Text of the same post/comment/reply just before the passage.")
    after: str = Field(description="Text of the same post/comment/reply just after the passage.")
    node: NodeText = Field(description="The whole post body, comment or reply holding the passage.")
    parent: NodeText | None = Field(None, description="For a reply, the comment it answers.")


class PassageResponse(BaseModel):
    id: str
    text: str
    citation: Citation
    context: PassageContext

    @classmethod
    def of(cls, p: passages.Passage) -> PassageResponse:
        return cls(
            id=p.chunk.id,
            text=p.chunk.text,
            citation=Citation.of(p.chunk),
            context=PassageContext(
                before=p.before,
                after=p.after,
                node=NodeText.of(p.node),
                parent=NodeText.of(p.parent) if p.parent else None,
            ),
        )


class LastIngest(BaseModel):
    """How the last ingest into the server's index folder ended, whoever ran it."""

    by: str = Field(..., description="`rag ingest`, or a server watching its data folder.")
    started: str = Field(..., description="UTC, ISO 8601.")
    finished: str = Field(..., description="UTC, ISO 8601.")
    seconds: float
    outcome: Literal["ok", "failed"] = Field(
        ..., description="`failed`: nothing changed on disk, the previous index serves on; the log says why."
    )
    build: str | None = Field(None, description="The build it wrote (`index/build-*`), when it did.")
    encoded: int | None = Field(None, description="Texts it encoded.")
    reused: int | None = Field(None, description="Texts whose vectors it took from the previous build.")
    skipped: list[str] = Field(
        default_factory=list, description="Bad post files it skipped, as `file:line: reason`."
    )


class Readiness(BaseModel):
    """GET /readyz: whether a query can be answered, and if not, why."""

    status: Literal["ready", "loading", "error"]
    documents: int | None = Field(None, description="Posts in the index, once ready.")
    chunks: int | None = Field(None, description="Passages in the index, once ready.")
    index_version: str | None = Field(None, description="The build served (`index/build-*`), once ready.")
    detail: str | None = Field(None, description="Why the index is not available, after a failed load.")
    watching: bool = Field(
        False,
        description="This process watches the data folder and ingests what changes (`RAG_WATCH`; one "
        "process per index folder).",
    )
    ingesting_since: str | None = Field(
        None, description="When the ingest this process is running started (UTC), if one is."
    )
    last_ingest: LastIngest | None = Field(
        None, description="The last ingest into the index folder, by this server or `rag ingest`."
    )


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------- batch search


class BatchSearchRequest(Strict):
    queries: list[SearchRequest] = Field(
        ..., min_length=1, max_length=100, description="Up to 100 searches, answered in order."
    )


class BatchSearchResponse(BaseModel):
    responses: list[SearchResponse] = Field(description="One response per query, in request order.")
    took_ms: float


# ---------------------------------------------------------------- quote attribution


class CiteRequest(Strict):
    text: str = Field(
        ...,
        description="The quote to attribute (whitespace, case and curly quotes are folded).",
        # Stated for the schema, checked by the route (`check_query`), whose messages say more than
        # pydantic's (an unpaired surrogate, say, is named where it is).
        json_schema_extra={"minLength": 1},
    )
    k: Count = Field(
        5,
        ge=1,
        le=50,
        strict=True,
        description="How many closest passages when there is no exact occurrence.",
    )


class QuoteMatch(BaseModel):
    """Where a quote comes from: `raw_file_text[start:end]` is the quote (if not exact, the passage)."""

    exact: bool
    start: int
    end: int
    score: float = Field(description="1.0 for an exact occurrence; otherwise a 0..1 similarity.")
    passage_id: str = Field(description="The passage cited; resolve it with GET /v1/passages/{id}.")
    passage_ids: list[str] = Field(description="Every passage the match overlaps (two when it spans chunks).")
    citation: Citation

    @classmethod
    def of(cls, m: Match) -> QuoteMatch:
        return cls(
            exact=m.exact,
            start=m.start,
            end=m.end,
            score=m.score,
            passage_id=m.chunk.id,
            passage_ids=[c.id for c in m.chunks],
            citation=Citation.of(m.chunk),
        )


class CiteResponse(BaseModel):
    matches: list[QuoteMatch] = Field(
        description="Exact occurrences, earliest first; else the closest passages."
    )


class BatchCiteRequest(Strict):
    requests: list[CiteRequest] = Field(
        ..., min_length=1, max_length=100, description="Up to 100 quotes to attribute, answered in order."
    )


class BatchCiteResponse(BaseModel):
    responses: list[CiteResponse] = Field(description="One response per quote, in request order.")
    took_ms: float


# ---------------------------------------------------------------- documents


class DocumentSummary(BaseModel):
    id: str
    title: str
    date: str | None
    source: str
    comments: int = Field(description="Top-level comments.")
    replies: int = Field(description="Replies to comments.")


class DocumentsResponse(BaseModel):
    documents: list[DocumentSummary]

    @classmethod
    def of(cls, index: Index) -> DocumentsResponse:
        docs = sorted(index.documents.values(), key=lambda d: d.id)
        return cls(
            documents=[
                DocumentSummary(
                    id=d.id,
                    title=d.title,
                    date=d.date,
                    source=d.source,
                    comments=len(d.comments),
                    replies=len(d.replies),
                )
                for d in docs
            ]
        )


class ReplyNode(BaseModel):
    number: int = Field(description="Reply number within its comment, from 1.")
    start: int
    end: int
    text: str
    passage_ids: list[str]


class CommentNode(BaseModel):
    number: int = Field(description="Comment number, from 1.")
    start: int
    end: int
    text: str
    passage_ids: list[str]
    replies: list[ReplyNode]


class BodyNode(BaseModel):
    start: int
    end: int
    text: str
    passage_ids: list[str]


class DocumentResponse(BaseModel):
    """A whole post: `raw_file_text[start:end]` of each node is its text, up to indentation."""

    id: str
    title: str
    date: str | None
    source: str
    body: BodyNode
    comments: list[CommentNode]

    @classmethod
    def of(cls, index: Index, document_id: str) -> DocumentResponse:
        doc = index.document(document_id)
        ids = passages.passage_ids_by_node(index, doc.id)

        def passage_ids(n: Node) -> list[str]:
            return ids.get((n.kind, n.comment, n.reply), [])

        comments = [
            CommentNode(
                number=c.comment or 0,
                start=c.start,
                end=c.end,
                text=doc.text(c),
                passage_ids=passage_ids(c),
                replies=[
                    ReplyNode(
                        number=r.reply or 0,
                        start=r.start,
                        end=r.end,
                        text=doc.text(r),
                        passage_ids=passage_ids(r),
                    )
                    for r in doc.replies
                    if r.comment == c.comment
                ],
            )
            for c in doc.comments
        ]
        body = doc.body
        return cls(
            id=doc.id,
            title=doc.title,
            date=doc.date,
            source=doc.source,
            body=BodyNode(start=body.start, end=body.end, text=doc.text(body), passage_ids=passage_ids(body)),
            comments=comments,
        )


class AskRequest(Strict):
    question: str = Field(..., min_length=1, description="The question, in natural language.")
    k: Count = Field(5, ge=1, le=20, strict=True, description="How many passages the answer may draw on.")
    backend: str | None = Field(
        None,
        description="Backend name or alias; default RAG_BACKEND. /openapi.json lists those the server knows.",
    )
    stream: bool = Field(
        False, strict=True, description="Answer as server-sent events: `delta`s, then one `done`."
    )
    filters: SearchFilters | None = None
    options: dict[str, object] | None = Field(None, description="Backend options, checked by the backend.")
    history: list[str] = Field(
        default_factory=list, max_length=20, description="Earlier user turns, to rewrite a follow-up."
    )


class AskCitation(SearchResult):
    n: int = Field(description="The number the answer cites this passage by, as [n].")


class AnswerSupport(BaseModel):
    """How well the passages an answer cites match its question, the same way for every backend."""

    level: Literal["strong", "weak", "none"] = Field(
        description="`none`: the answer abstained (the archive does not appear to answer); `weak`: it "
        "answered, but its cited passages match the question poorly; `strong`: otherwise."
    )
    score: float = Field(
        ge=0.0,
        le=1.0,
        description="The best match, 0-1, between the searched query and a sentence of a cited passage: "
        f"the share of the query's words it covers, rarer words weighing more; `weak` below {WEAK_BELOW}. "
        "For an abstention, that of the nearest passages listed.",
    )


class AskResponse(BaseModel):
    answer: str
    citations: list[AskCitation]
    backend: str = Field(description="The backend that wrote the answer (the fallback, if one failed).")
    abstained: bool
    warnings: list[str]
    took_ms: float
    query: str = Field(description="The query passages were retrieved with (a rewritten follow-up).")
    support: AnswerSupport = Field(description="How well the cited passages support the answer.")

    @classmethod
    def of(cls, answer: Answer) -> AskResponse:
        return cls(
            answer=answer.text,
            citations=[
                AskCitation(
                    n=s.n,
                    id=s.chunk.id,
                    text=s.chunk.text,
                    score=round(s.score, 6),
                    citation=Citation.of(s.chunk),
                )
                for s in answer.citations
            ],
            backend=answer.backend,
            abstained=answer.abstained,
            warnings=answer.warnings,
            took_ms=answer.took_ms,
            query=answer.query,
            support=AnswerSupport(level=answer.support.level, score=answer.support.score),
        )
