"""The server's own ingest: it watches its data folder and ingests what changes, in process.

With `RAG_WATCH` on (the default), the loader thread starts this once the index is served. One
process per index folder watches: the one holding ``index/watch.lock`` (`rag serve --workers N`
starts N servers over one index; the others only reload what it builds, and take over the watch if
its process ends). When post files are added, changed or removed (`rag.ingest.watch`; a file is
published only once it has held still for `RAG_WATCH_SETTLE` seconds), it runs `rag.service.ingest`,
the very code `rag ingest` runs: the same ingest lock (so a `rag ingest` started meanwhile waits
for it, or it for that one), the same incremental build (only new or changed texts are encoded,
the vectors of the rest taken from the index served), saved as a normal build with `current`
swapped, so a restart serves the same index. Then it wakes the loader, which swaps the build in as
it does any other (`api.loader`). Bad post files are logged with file and line and skipped, and
listed on /readyz. A failed ingest is logged, the old index keeps serving, and it is tried again
at the next change or after `RETRY_AFTER` seconds.

Searches keep their latency meanwhile: the ingest encodes its texts a few at a time (`PASS_CHARS`)
through the query batcher's background lane (`QueryBatcher.background`: a pass starts only when no
query waits and a lane is free, on every idle core as one-thread parts, on one beside a query; a
query never queues behind one, and queries run narrow while the ingest encodes, so it keeps its
lane), and its thread runs at a lower OS priority (`RAG_WATCH_NICE`, 5: a search's thread gets 3
times its share of a core they both want; on Linux, where a thread's priority is its own, and the
helper threads that run the other parts of its passes take it), so the event loop and the
searches' own work come first on the cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from api.deps import AppState
from rag.ingest.corpus import load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.runs import Cancelled, FilesChanged, IngestRecord, read_record, watch_lock
from rag.ingest.watch import PendingChanges, watch_posts
from rag.search.batching import QueryBatcher, lower_thread_priority
from rag.search.retrieval import query_batcher
from rag.service import ingest

logger = logging.getLogger(__name__)

WHO = "rag serve, watching its data folder"  # how other ingests and the record name this one
# Characters per background pass (~500 word pieces: a few long texts or many short ones), so a pass
# is short and a query that finds every lane taken waits for little.
PASS_CHARS = 2000
RETRY_AFTER = 60.0  # seconds before a failed ingest is tried again with no new change
ELECTION_EVERY = 5.0  # seconds between a non-watching process's tries to take the watch over
# An ingest starts once the changed files have paused for this share of RAG_WATCH_SETTLE (they must
# hold still for all of it before the build is published, `rag.ingest.watch`): a writer's short
# pauses start no ingest to be dropped, and a file renamed into place starts one at once.
START_AFTER = 0.2


class _LaneEmbedder(Embedder):
    """The served model, encoding passages on the query batcher's background lane, a few texts a
    pass, and giving up between passes once the server is shutting down."""

    batcher: QueryBatcher
    stop: threading.Event

    def encode(self, texts: Sequence[str], batch_size: int = 64, threads: int | None = None) -> np.ndarray:
        parts = []
        with self.batcher.background_work():
            for piece in _passes(texts):
                if self.stop.is_set():
                    raise Cancelled("the server is shutting down")
                parts.append(self.batcher.background(piece))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)


def _passes(texts: Sequence[str]) -> list[Sequence[str]]:
    """`texts` in order, cut into runs of at most PASS_CHARS characters (at least one text each)."""
    out: list[Sequence[str]] = []
    start = size = 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > PASS_CHARS:
            out.append(texts[start:i])
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        out.append(texts[start:])
    return out


def start(state: AppState) -> None:
    """Start the watch (in a thread of its own), unless the model failed to load."""
    if state.embedder is None:
        logger.error("not watching %s: the model did not load", state.settings.data_dir)
        return
    threading.Thread(target=_run, args=(state, state.embedder), name="ingest", daemon=True).start()


def _run(state: AppState, model: Embedder) -> None:
    settings = state.settings
    election = watch_lock(settings.index_dir, WHO)
    try:
        told = False
        while not election.try_acquire():
            if not told:
                holder = election.holder() or "another process"
                logger.info("%s watches %s; this process serves what it builds", holder, settings.data_dir)
                told = True
            if state.stop.wait(ELECTION_EVERY):
                return
    except OSError as exc:  # a read-only index folder: nothing could be ingested into it anyway
        logger.error("not watching %s: cannot take %s (%s)", settings.data_dir, election.path, exc)
        return
    try:
        _lower_priority(settings.watch_nice)
        pending = PendingChanges()
        threading.Thread(target=_watch, args=(state, pending), name="data-watcher", daemon=True).start()
        state.ingest.watching = True
        logger.warning("watching %s: new, changed and removed posts are ingested", settings.data_dir)
        if _corpus_changed(state):  # while the index loaded, before the watch began
            pending.add(set())
        # Start once the changes pause; the ingest itself waits out the rest of the settle time.
        while (changed := pending.take(settings.watch_settle * START_AFTER, state.stop)) is not None:
            _ingest(state, model, changed, pending)
    finally:
        state.ingest.watching = False
        election.release()


def _watch(state: AppState, pending: PendingChanges) -> None:
    try:
        for changed in watch_posts(state.settings.data_dir, state.stop, state.settings.watch_poll):
            pending.add(changed)
    except Exception:  # noqa: BLE001 - the index keeps serving; the log says why it stopped updating
        logger.exception("stopped watching %s", state.settings.data_dir)


def _lower_priority(nice: int) -> None:
    """Lower this thread's priority (see `lower_thread_priority`)."""
    try:
        lower_thread_priority(nice)
    except OSError as exc:
        logger.info("ingest runs at normal priority: %s", exc)


def _corpus_changed(state: AppState) -> bool:
    serving = state.serving
    if serving is None:  # a failed first load is not retried behind RAG_ON_STALE's back
        return False
    served = serving.retriever.index.manifest["corpus_fingerprint"]
    return bool(load_corpus(state.settings.data_dir).fingerprint != served)


def _ingest(state: AppState, model: Embedder, changed: set[Path], pending: PendingChanges) -> None:
    settings = state.settings
    serving = state.serving  # its vectors are reused, and its query lanes shared
    lane = cast(_LaneEmbedder, _LaneEmbedder.from_loaded(model))
    lane.batcher = serving.retriever.batcher if serving is not None else query_batcher(model)
    lane.stop = state.stop
    names = ", ".join(sorted(p.name for p in changed)) or "the data folder"
    logger.info("ingesting %s", names)
    state.ingest.running_since = time.time()
    try:
        index, corpus = ingest(
            settings,
            lane,
            by=WHO,
            previous=serving.retriever.index if serving is not None else None,
            stop=state.stop,
            still_for=settings.watch_settle,
        )
    except FilesChanged as exc:  # a file still being written: taken again once it pauses
        state.ingest.running_since = None
        state.ingest.outcomes["restarted"] += 1
        logger.info("ingest of %s dropped, nothing saved: %s", names, exc)
        pending.add(exc.paths)
        return
    except Cancelled:
        state.ingest.running_since = None
        logger.info("ingest stopped: the server is shutting down")
        return
    except Exception:  # noqa: BLE001 - the old index keeps serving; the next change tries again
        _finished(state, "failed")
        still = serving.version if serving is not None else None
        logger.exception("ingest of %s failed; still serving %s; next try in %g s", names, still, RETRY_AFTER)
        retry = threading.Timer(RETRY_AFTER, pending.add, args=(set(),))
        retry.daemon = True
        retry.start()
        return
    record = _finished(state, "ok")
    for error in corpus.errors:
        logger.warning("skipped %s", error)
    m = index.manifest
    logger.warning(
        "ingested %s: %s posts, %s texts encoded and %s reused in %.1f s -> %s",
        names,
        m["documents"],
        m["incremental"]["encoded"],
        m["incremental"]["reused"],
        record.seconds if record is not None else float("nan"),
        m["build"],
    )
    state.reload.set()  # the loader swaps the new build in now, not at its next check


def _finished(state: AppState, outcome: str) -> IngestRecord | None:
    status = state.ingest
    status.running_since = None
    status.outcomes[outcome] += 1
    status.last = read_record(state.settings.index_dir)
    return status.last
