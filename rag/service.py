"""The assembled retrieval stack: settings -> embedder -> index -> retriever.

`open_index` is the one place that decides what happens to an index on disk: load it when it
matches the settings and the corpus, build it when it is missing, and when it is stale or corrupt
either rebuild it (``on_stale="rebuild"``) or refuse with a message saying why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rag.errors import IndexIncompatibleError, IndexNotBuiltError, IndexUnavailableError, IndexWriteError
from rag.ingest.corpus import Corpus, corpus_files, load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, IndexConfig, build, check_compatible, load, read_manifest, save
from rag.ingest.runs import Cancelled, Holder, IngestRecord, ingest_lock, write_record
from rag.settings import Settings

if TYPE_CHECKING:  # imported where a retriever is made: `rag ingest` needs no BM25 (bm25s, scipy)
    from rag.search.batching import QueryBatcher
    from rag.search.retrieval import Retriever

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
_STARTUP = "rag serve, building its index"  # how a server's startup build names itself


def index_config(settings: Settings) -> IndexConfig:
    return IndexConfig(settings.model, settings.chunk_size, settings.chunk_overlap)


@dataclass
class OpenedIndex:
    index: Index
    rebuilt: bool
    reason: str | None  # why it was (re)built, if it was
    corpus: Corpus | None  # the parse report, when the corpus was parsed


def _previous(index_dir: Path) -> Index | None:
    """The index `current` points at, to reuse its vectors; None when there is none that loads."""
    try:
        return load(index_dir)
    except (IndexNotBuiltError, IndexIncompatibleError) as exc:
        logger.info("no previous index to reuse: %s", exc)
        return None


def _waiting_for(holder: Holder | None) -> None:
    logger.warning("waiting for the ingest lock: %s holds it", holder or "another process")


def ingest(
    settings: Settings,
    embedder: Embedder,
    progress: Progress | None = None,
    full: bool = False,
    *,
    wait: float | None = None,
    by: str = "rag ingest",
    previous: Index | None = None,
    stop: threading.Event | None = None,
    still_for: float | None = None,
) -> tuple[Index, Corpus]:
    """Parse the data directory and build and save a fresh index.

    Texts the current index already embedded (same model and chunking) keep their vectors, so only
    new or changed posts, comments and replies are encoded; `full` encodes everything again, and
    `previous` names another index to take vectors from (a server passes the one it serves, already
    loaded). Holds the index folder's ingest lock throughout, waiting up to `wait` seconds for it
    (None: as long as it takes, or until `stop` is set: Cancelled) and then raising
    IngestLockedError naming the holder; `by` is the name other ingests see. How it ended is
    recorded in the folder (`rag.ingest.runs`). With `still_for` (the server's watch), it saves only
    if every post file it read held still that many seconds from just before it read them, waiting
    out the rest of that time first, and raises FilesChanged naming the ones that did not.
    """
    lock = ingest_lock(settings.index_dir, by)
    if not lock.acquire(wait, stop, _waiting_for):
        raise Cancelled("stopped while waiting for the ingest lock")
    started = time.time()
    try:
        still = None
        if still_for is not None:
            from rag.ingest.watch import StillFiles  # the server's: `rag ingest` needs no watchfiles

            still = StillFiles(settings.data_dir, still_for, stop or threading.Event())
        corpus = load_corpus(settings.data_dir)
        if still is not None:
            still.check_read()  # before encoding anything: a file came, went or changed as it was read
        if not full and previous is None:
            previous = _previous(settings.index_dir)
        index = build(corpus, embedder, index_config(settings), progress, None if full else previous)
        if still is not None:
            still.check_held()
        save(index, settings.index_dir)
    except Cancelled:  # abandoned, not failed: nothing was written, and nothing to report
        raise
    except BaseException as exc:
        why = str(exc) or type(exc).__name__
        write_record(settings.index_dir, IngestRecord(by, started, time.time(), "failed", error=why))
        raise
    else:
        incremental = index.manifest["incremental"]
        done = IngestRecord(
            by,
            started,
            time.time(),
            "ok",
            build=index.manifest["build"],
            encoded=incremental["encoded"],
            reused=incremental["reused"],
            skipped=[str(error) for error in corpus.errors],
        )
        write_record(settings.index_dir, done)
    finally:
        lock.release()
    return index, corpus


def _current(settings: Settings, corpus: Corpus, load_it: bool) -> tuple[Index | None, str | None]:
    """Whether the index on disk fits these settings and this corpus: (it, loaded when `load_it`,
    and None) when it does, (None, why) when it must be built. Raises IndexIncompatibleError when it
    is stale or corrupt and RAG_ON_STALE=refuse."""
    try:
        check_compatible(read_manifest(settings.index_dir), index_config(settings), corpus.fingerprint)
        return (load(settings.index_dir, settings.map_above) if load_it else None), None
    except IndexNotBuiltError as exc:
        return None, str(exc)
    except IndexIncompatibleError as exc:
        if settings.on_stale == "refuse":
            raise IndexIncompatibleError(
                f"{exc} (RAG_ON_STALE=refuse, so the server will not rebuild it)"
            ) from exc
        return None, str(exc)


def open_index(settings: Settings, embedder: Embedder, progress: Progress | None = None) -> OpenedIndex:
    """Load the index, building or rebuilding it as the settings say."""
    corpus = load_corpus(settings.data_dir, corpus_files(settings.data_dir))
    index, reason = _current(settings, corpus, load_it=True)
    if index is not None:
        return OpenedIndex(index, False, None, corpus)
    logger.warning("building the index: %s", reason)
    index, corpus = ingest(settings, embedder, progress, by=_STARTUP)
    return OpenedIndex(index, True, reason, corpus)


def index_unavailable(exc: BaseException) -> IndexUnavailableError:
    """Why a server has no index, as its clients may see it: what failed, never a path (those go to
    the log with the cause). An OSError anywhere in the cause chain lends its reason (disk full, ...)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    if isinstance(cause, OSError):
        what = f"the index could not be read or written ({cause.strerror or type(cause).__name__})"
    elif isinstance(exc, IndexWriteError):
        what = "a new index could not be written (disk full or not writable)"
    elif isinstance(exc, IndexIncompatibleError):
        what = "the index on disk is stale or corrupt and was not rebuilt"
    elif isinstance(exc, IndexNotBuiltError):
        what = "there is no index"
    else:
        what = f"the index failed to load ({type(exc).__name__})"
    return IndexUnavailableError(f"{what}; the operator should check the server log and run `rag ingest`")


def ensure_index(settings: Settings, progress: Progress | None = None) -> str | None:
    """Build the index on disk unless a current one fits the settings and the corpus; loads the
    model only to build. Returns why it was built, or None. `rag serve --workers` runs this once
    before starting workers that then only load."""
    _, reason = _current(settings, load_corpus(settings.data_dir, corpus_files(settings.data_dir)), False)
    if reason is not None:
        logger.warning("building the index: %s", reason)
        ingest(settings, Embedder.from_settings(settings), progress, by=_STARTUP)
    return reason


def make_retriever(
    settings: Settings, index: Index, embedder: Embedder, batcher: QueryBatcher | None = None
) -> Retriever:
    """A retriever over `index`; `batcher` shares the query lanes of another one (a server swapping
    in a new index keeps its lanes, which its own ingest also encodes on)."""
    from rag.search.retrieval import FusionWeights, Retriever

    return Retriever(
        index,
        embedder,
        weights=FusionWeights(bm25=1.0 - settings.dense_weight, dense=0.0, sentence=settings.dense_weight),
        fusion=settings.fusion,
        candidates=settings.candidates,
        lanes=settings.query_lanes,
        batcher=batcher,
    )


def retriever_variant(settings: Settings, base: Retriever) -> Retriever:
    """A retriever for `settings` beside `base`, for comparing the two: it shares `base`'s model and
    index where the settings still fit them and builds a new index in memory where they do not."""
    embedder = base.embedder
    other_runtime = settings.runtime != embedder.runtime and settings.runtime in embedder.runtimes
    if settings.model != base.index.manifest["model"] or other_runtime:
        embedder = Embedder.from_settings(settings)
    index = base.index
    try:
        check_compatible(index.manifest, index_config(settings), None)
        if embedder is not base.embedder:  # another runtime: its own passage vectors too
            raise IndexIncompatibleError("another model or runtime")
    except IndexIncompatibleError:
        index = build(load_corpus(settings.data_dir), embedder, index_config(settings))
    return make_retriever(settings, index, embedder)
