"""Dependencies routes declare: the settings and the loaded retrieval stack on `app.state`.

They are `async` (none blocks): FastAPI runs sync dependencies on the shared thread pool, and a
probe or lookup must not wait for a thread behind slow work.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, Request

from rag.answer.answering import Answerer
from rag.backends import Registry
from rag.errors import IndexNotBuiltError, RagError
from rag.ingest.index import Index
from rag.search.quotes import Quoter
from rag.search.retrieval import Retriever
from rag.settings import Settings


@dataclass
class AppState:
    """What the lifespan loads; `ready` is set once a query can be answered."""

    settings: Settings
    registry: Registry | None = None  # the backends these settings allow, loaded at startup
    retriever: Retriever | None = None
    quoter: Quoter | None = None  # one per retriever, so each document is folded once, not per request
    error: RagError | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    answer_limiter: CapacityLimiter | None = None  # the answers' own threads (api/answer_pool.py)
    # Answers being made, so a shutdown can cut their LLM calls (api/answer_pool.py: cut_answers).
    answers: weakref.WeakSet[Answerer] = field(default_factory=weakref.WeakSet)


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.rag
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_registry(state: StateDep) -> Registry:
    if state.registry is None:  # pragma: no cover - the lifespan sets it before serving
        raise IndexNotBuiltError("the server is still starting; retry when GET /readyz answers 200")
    return state.registry


async def get_retriever(state: StateDep) -> Retriever:
    if state.error is not None:
        raise state.error
    if not state.ready.is_set() or state.retriever is None:
        raise IndexNotBuiltError("the index is still loading; retry when GET /readyz answers 200")
    return state.retriever


async def get_quoter(state: StateDep, retriever: Annotated[Retriever, Depends(get_retriever)]) -> Quoter:
    if state.quoter is None or state.quoter.retriever is not retriever:  # pragma: no cover - set with it
        raise IndexNotBuiltError("the index is still loading; retry when GET /readyz answers 200")
    return state.quoter


async def get_index(retriever: Annotated[Retriever, Depends(get_retriever)]) -> Index:
    return retriever.index


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RetrieverDep = Annotated[Retriever, Depends(get_retriever)]
IndexDep = Annotated[Index, Depends(get_index)]
QuoterDep = Annotated[Quoter, Depends(get_quoter)]
RegistryDep = Annotated[Registry, Depends(get_registry)]


async def get_answer_limiter(state: StateDep) -> CapacityLimiter:
    """The answers' thread budget (api/answer_pool.py), made on first use inside the event loop."""
    if state.answer_limiter is None:
        state.answer_limiter = CapacityLimiter(state.settings.ask_workers)
    return state.answer_limiter


AnswerLimiterDep = Annotated[CapacityLimiter, Depends(get_answer_limiter)]
