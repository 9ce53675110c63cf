"""Load the index the server answers from: at startup, and again whenever a new build appears.

`rag ingest` writes each build to its own folder and then swaps the `index/current` symlink with one
rename. Every `RAG_RELOAD_INTERVAL` seconds the loader thread reads where `current` points; when it
is a build other than the one served, the thread loads it (checksums verified; refused unless built
with the model and chunking of the settings), puts a retriever and a quoter over it with the model
already loaded, and swaps them in with one assignment of `AppState.serving`. A request already
running finishes on the index it started with (`api.deps.get_serving`), and `/readyz` stays 200.

A build that fails to load is logged, the old index keeps serving, and that build is not tried
again: the next `rag ingest` moves `current`, and that build is tried. An index passed in already
loaded and never saved (tests build some in memory) is not replaced by what is on disk, and its
data folder is not watched.

The same thread checks, at the same interval, whether a file of the build being served was changed
in place (`DiskWatch`: truncated, or written over by `cp` or `rsync --inplace`). A build read into
memory keeps serving its intact copy, with a warning in the log. A memory-mapped one would kill the
process with SIGBUS at the first read past a cut file's new end, so it stops being served: every
query gets 503 `index_unavailable` until `current` moves to a build that loads. For a mapped build
the same check (a `stat` of each file, ~10 µs) also runs as each request takes the index
(`api.deps.get_serving`), so a file cut between two requests is found before the next one reads it;
only a request already reading a file as it is cut can still meet the fault. Read-only build files
(`rag.ingest.index`) make that cut unlikely, and reading small indexes into memory rules it out.

With `RAG_WATCH` on, the thread also starts the server's own ingest (`api.watcher`), which wakes it
as soon as it has saved a build, so that build is swapped in at once by the same path; it then
checks even with `RAG_RELOAD_INTERVAL=0`, when woken. Every check also re-reads the index folder's
record of its last ingest (`index/last_ingest.json`, whoever ran it) for /readyz and /metrics.
"""

from __future__ import annotations

import logging

from api import watcher
from api.deps import AppState, Serving, check_served_files
from rag.errors import RagError
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, check_compatible, current_build, load
from rag.ingest.runs import read_record
from rag.search.quotes import Quoter
from rag.search.retrieval import Retriever
from rag.service import index_config, index_unavailable, make_retriever, open_index

logger = logging.getLogger(__name__)


def serving(retriever: Retriever) -> Serving:
    return Serving(retriever, Quoter(retriever))


def _embedder(state: AppState) -> Embedder:
    if state.embedder is None:
        state.embedder = Embedder.from_settings(state.settings)
    return state.embedder


def _first_load(state: AppState) -> None:
    """Load (or build) the index at startup; record a failure on /readyz instead of dying."""
    try:
        embedder = _embedder(state)
        embedder.preload()  # the weights load while the index does
        opened = open_index(state.settings, embedder)
        if opened.rebuilt:
            logger.warning("index built: %s", opened.reason)
        # Ready means a query is answered at full speed: the first forward pass (weights loaded,
        # torch's threads started) is paid here, not by the first user.
        embedder.encode(["warm up"])
        state.serving = serving(make_retriever(state.settings, opened.index, _embedder(state)))
    except RagError as exc:
        logger.error("index not available: %s", exc)
        state.error = index_unavailable(exc)
    except Exception as exc:  # noqa: BLE001 - a failed load must surface on /readyz, not kill the server
        logger.exception("index failed to load")
        state.error = index_unavailable(exc)


def _load_current(state: AppState) -> Serving:
    index: Index = load(state.settings.index_dir, state.settings.map_above)
    check_compatible(index.manifest, index_config(state.settings), None)
    # The new retriever keeps the old one's query lanes: passes on both indexes share the cores.
    lanes = state.serving.retriever.batcher if state.serving is not None else None
    return serving(make_retriever(state.settings, index, _embedder(state), lanes))


def run(state: AppState) -> None:
    """The loader thread: the first load unless an index was given, then the watch for new builds."""
    settings = state.settings
    index_dir = settings.index_dir
    if state.serving is None:
        _first_load(state)
    state.ingest.last = read_record(index_dir)
    if state.serving is not None and "build" not in state.serving.retriever.index.manifest:
        logger.info("serving an index that was never saved: not watching %s/current", index_dir)
        return
    if settings.watch:
        watcher.start(state)
    elif settings.reload_interval <= 0:
        return
    # After a failed first load, the build that failed is not retried: RAG_ON_STALE=refuse, say,
    # must not be overridden by the watch. A new build is loaded, and clears the error.
    seen = state.serving.version if state.serving is not None else current_build(index_dir)
    while True:
        state.reload.wait(settings.reload_interval if settings.reload_interval > 0 else None)
        state.reload.clear()
        if state.stop.is_set():
            return
        state.ingest.last = read_record(index_dir)
        check_served_files(state)
        target = current_build(index_dir)
        if target is None or target == seen:
            continue
        seen = target
        try:
            new = _load_current(state)
        except Exception:  # noqa: BLE001 - a bad build must never stop the index being served
            logger.exception("index %s failed to load; still serving %s", target, _version(state))
            continue
        seen = new.version  # `current` may have moved again while it loaded
        old, state.serving, state.error = _version(state), new, None
        logger.warning("now serving index %s (was %s)", new.version, old)


def _version(state: AppState) -> str | None:
    return state.serving.version if state.serving is not None else None
