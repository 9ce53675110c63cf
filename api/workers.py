"""`rag serve --workers N`: N worker processes, each the same server as `rag serve` alone.

uvicorn's own supervisor (`uvicorn.run(..., workers=N)`) unpickles a config in each worker and runs
a plain `uvicorn.Server` on it. It has no hook for a server class, and a protocol class made at run
time does not pickle, so its workers ran without the request-head timeout and without the shutdown
that cuts LLM calls (api/serving.py). Here the parent binds the socket and starts N processes, and
each calls `api.serving.serve` on that socket: the very function `rag serve` runs in one process.

What the workers share lives in a directory the parent makes afresh for each server and removes
when it stops:

- the rate limit's token buckets (api/buckets.py), so `RAG_RATE_LIMIT` is the server's rate;
- prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``), so /metrics reports the
  whole server whichever worker answers the scrape (api/metrics.py).

The parent restarts a worker that dies while the server runs (a worker that fails to start stops
the server instead, as it would fail again), and marks a dead worker's live gauges gone. On SIGTERM
or SIGINT it passes SIGTERM to each worker and waits: each one stops listening and lets what it has
in flight finish within `RAG_SHUTDOWN_GRACE`, as one process does.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from api.serving import SHUTDOWN_MARGIN, serve, server_config
from rag.settings import Settings

logger = logging.getLogger("uvicorn.error")
STARTUP_FAILURE = 3  # uvicorn's exit code for an app that could not start (uvicorn.config)
METRICS = "metrics"  # prometheus_client's files, in the shared directory


def serve_workers(settings: Settings, workers: int) -> int:
    """Serve with `workers` processes until SIGTERM or SIGINT; the exit code for `rag serve`."""
    shared = Path(tempfile.mkdtemp(prefix="rag-serve-"))
    (shared / METRICS).mkdir()
    # prometheus_client chooses its multiprocess mode from this variable when first imported, and
    # each worker is a fresh interpreter that inherits it from here.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / METRICS)
    stop = threading.Event()

    def stop_on(sig: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_on)
    sock = server_config(None, settings, log_level="info").bind_socket()
    try:
        return _supervise(settings, workers, shared, sock, stop)
    finally:
        sock.close()
        shutil.rmtree(shared, ignore_errors=True)


def _supervise(
    settings: Settings, workers: int, shared: Path, sock: socket.socket, stop: threading.Event
) -> int:
    # spawn, not fork: a worker must not inherit the parent's torch threads or anything it loaded
    spawn = multiprocessing.get_context("spawn")

    def start() -> SpawnProcess:
        process = spawn.Process(target=_worker, args=(settings, shared, sock), name="rag-worker")
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    code = 0
    while not stop.wait(0.5):
        for i, process in enumerate(processes):
            if process.is_alive():
                continue
            _gone(process, shared)
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker [%d] failed to start; stopping the server", process.pid)
                code = STARTUP_FAILURE
                stop.set()
                break
            logger.error("worker [%d] died (exit code %s); starting another", process.pid, process.exitcode)
            processes[i] = start()
    # Closed here too, or the kernel would go on queueing new connections on it that no worker
    # takes (they close theirs as they shut down): a new connection is refused from now on.
    sock.close()
    for process in processes:
        process.terminate()  # SIGTERM: the worker's graceful shutdown
    # Each worker gives its requests the grace (plus uvicorn's margin); a worker still there well
    # after that is stuck, not busy.
    patience = settings.shutdown_grace + SHUTDOWN_MARGIN + 10.0
    for process in processes:
        process.join(patience)
        if process.is_alive():
            logger.error("worker [%d] did not stop; killing it", process.pid)
            process.kill()
            process.join()
        _gone(process, shared)
    return code


def _gone(process: SpawnProcess, shared: Path) -> None:
    if process.pid is not None:
        mark_process_dead(process.pid, str(shared / METRICS))  # type: ignore[no-untyped-call]


def _worker(settings: Settings, shared: Path, sock: socket.socket) -> None:
    """One worker: the app, made here, served by `api.serving.serve` on the parent's socket."""
    from api.main import create_app

    try:
        serve(create_app(settings, shared_dir=shared), settings, [sock], log_level="info", access_log=False)
    except KeyboardInterrupt:  # SIGINT (a terminal's Ctrl+C reaches every worker): already shut down
        pass
