"""Dependencies routes declare: the settings and the loaded retrieval stack on `app.state`.

They are `async` (none blocks): FastAPI runs sync dependencies on the shared thread pool, and a
probe or lookup must not wait for a thread behind slow work.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, Request

from rag.answer.answering import Answerer
from rag.backends import Registry
from rag.errors import IndexNotBuiltError, IndexUnavailableError, RagError
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index
from rag.ingest.runs import IngestRecord
from rag.search.quotes import Quoter
from rag.search.retrieval import Retriever
from rag.settings import Settings


@dataclass(frozen=True)
class Serving:
    """One loaded index with the retriever and quoter over it. A request reads `AppState.serving`
    once (`get_serving`) and uses that object from start to end, so a new index swapped in while it
    runs never mixes with the old one in its answer."""

    retriever: Retriever
    quoter: Quoter  # one per retriever, so each document is folded once, not per request

    @property
    def version(self) -> str:
        """The build folder the index was loaded from (`index/build-*`), or, for an index never
        saved, its creation time and corpus fingerprint."""
        manifest = self.retriever.index.manifest
        return str(manifest.get("build") or f"{manifest['created']}-{manifest['corpus_fingerprint'][:12]}")


@dataclass
class IngestStatus:
    """The server's own ingest (api/watcher.py), and the last ingest into its index folder by anyone."""

    watching: bool = False  # this process watches the data folder (one per index folder)
    running_since: float | None = None  # Unix time the ingest running now started
    last: IngestRecord | None = None  # index/last_ingest.json, as last read
    outcomes: Counter[str] = field(default_factory=Counter)  # this process's ingests by outcome


@dataclass
class AppState:
    """What the lifespan loads; `serving` is set once a query can be answered, and replaced (one
    assignment) when a newly built index has loaded."""

    settings: Settings
    registry: Registry | None = None  # the backends these settings allow, loaded by create_app
    serving: Serving | None = None
    embedder: Embedder | None = None  # the model, loaded once and shared by every index served
    error: RagError | None = None  # why the first load failed; cleared when an index loads later
    stop: threading.Event = field(default_factory=threading.Event)  # set at shutdown: stop watching
    reload: threading.Event = field(default_factory=threading.Event)  # set: look for a new build now
    ingest: IngestStatus = field(default_factory=IngestStatus)
    answer_limiter: CapacityLimiter | None = None  # the answers' own threads (api/answer_pool.py)
    # Answers being made, so a shutdown can cut their LLM calls (api/answer_pool.py: cut_answers).
    answers: weakref.WeakSet[Answerer] = field(default_factory=weakref.WeakSet)

    def shut_down(self) -> None:
        """Stop the loader and the watcher (at the end of the lifespan)."""
        self.stop.set()
        self.reload.set()


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.rag
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_registry(state: StateDep) -> Registry:
    if state.registry is None:  # pragma: no cover - create_app sets it before serving
        raise IndexNotBuiltError("the server is still starting; retry when GET /readyz answers 200")
    return state.registry


logger = logging.getLogger(__name__)


def check_served_files(state: AppState) -> None:
    """Stop serving a memory-mapped build whose files changed in place; only warn for one held in
    memory (see api/loader.py's docstring). Called by the loader thread between requests and, for a
    mapped build, as each request takes the index."""
    serving = state.serving
    disk = serving.retriever.index.disk if serving is not None else None
    changed = disk.changed() if disk is not None else []
    if serving is None or not changed:
        return
    names = ", ".join(changed)
    if not serving.retriever.index.mapped:
        logger.warning(
            "index %s: %s changed on disk in place; still serving the copy loaded in memory, but that "
            "build will not load again: run `rag ingest`",
            serving.version,
            names,
        )
        return
    logger.error(
        "index %s: %s changed on disk in place while memory-mapped; no longer serving it (503) "
        "until a new build loads: run `rag ingest`",
        serving.version,
        names,
    )
    # The error first: a request between the two assignments still finds the old index, never
    # neither (which would read as "still loading").
    state.error = IndexUnavailableError(
        "a file of the index being served was changed on disk; the operator should check the server "
        "log and run `rag ingest`"
    )
    state.serving = None


async def get_serving(state: StateDep, request: Request) -> Serving:
    """The index this request uses throughout (FastAPI resolves it once per request). A mapped
    one is first checked for files cut or overwritten in place, which would kill the process at the
    first read past a cut file's end."""
    if state.serving is not None and state.serving.retriever.index.mapped:
        check_served_files(state)
    serving = state.serving
    if serving is None:
        if state.error is not None:
            raise state.error
        raise IndexNotBuiltError("the index is still loading; retry when GET /readyz answers 200")
    request.state.index_version = serving.version  # for the X-Index-Version header
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


async def get_retriever(serving: ServingDep) -> Retriever:
    return serving.retriever


async def get_quoter(serving: ServingDep) -> Quoter:
    return serving.quoter


async def get_index(serving: ServingDep) -> Index:
    return serving.retriever.index


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
