"""Shared fixtures: the real MiniLM model (loaded once), a real index built from data/ in a temp
directory, and a real uvicorn server on 127.0.0.1 serving it.

Nothing here is mocked; tests that need their own index build it in `tmp_path` from a copy of
the model handle (`Embedder.from_loaded`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag.eval.retrieval import load_questions  # noqa: E402
from rag.ingest.embedding import Embedder  # noqa: E402
from rag.ingest.index import Index  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402
from rag.service import ingest, make_retriever  # noqa: E402
from rag.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
DEV = ROOT.parent / "shared" / "eval" / "dev.jsonl"
if not DEV.exists():  # CI keeps shared/ beside the clone; fall back to a copy in the repo
    DEV = ROOT / "tests" / "data" / "dev.jsonl"
# Every question set: dev and tune from shared/ (or their copies here), and the reworded set.
QUESTION_SETS = [DEV, DEV.with_name("tune.jsonl"), ROOT / "tests" / "data" / "reworded.jsonl"]


def evidence_quotes(n: int) -> list[str]:
    """The first `n` distinct evidence strings of the question sets: real quotes from the archive."""
    seen = dict.fromkeys(e for path in QUESTION_SETS for q in load_questions(path) for e in q.evidence)
    if len(seen) < n:
        raise ValueError(f"the question sets hold {len(seen)} distinct evidence strings, not {n}")
    return list(seen)[:n]


@pytest.fixture(scope="session")
def model() -> Embedder:
    return Embedder()


@pytest.fixture
def embedder(model: Embedder) -> Embedder:
    return Embedder.from_loaded(model)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("data")
    for path in DATA.glob("*.txt"):
        shutil.copy(path, data / path.name)
    # No rate limit on the shared server: every test calls it from 127.0.0.1 without a key, so the
    # whole session would count as one client; tests of the limit start servers of their own.
    index_dir = tmp_path_factory.mktemp("index")
    return Settings(data_dir=data, index_dir=index_dir, rate_limit=0, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def index(settings: Settings, model: Embedder) -> Index:
    built, _ = ingest(settings, model)
    return built


@pytest.fixture(scope="session")
def retriever(settings: Settings, index: Index, model: Embedder) -> Retriever:
    return make_retriever(settings, index, model)


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_INDEX_DIR": str(settings.index_dir),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def env(settings: Settings, index: Index) -> dict[str, str]:
    """Environment for a CLI run that reuses the session's already built index."""
    return cli_env(settings)


@contextmanager
def logged_requests() -> Iterator[list[dict[str, Any]]]:
    """The request log lines (api/telemetry.py) servers in this process write meanwhile."""
    lines: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    handler = Keep()
    logging.getLogger("rag.requests").addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger("rag.requests").removeHandler(handler)


def writable(path: Path) -> Path:
    """`path` made writable by its owner: a saved build's files are read-only (rag.ingest.index), so a
    test that damages one must first do what a person editing it by hand would have to."""
    path.chmod(0o644)
    return path


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """End a server started by a test: `sig`, then a kill if it has not exited within `timeout` s."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, on 127.0.0.1 and a free port; entered once `probe` answers 200.
    With `settings`, uvicorn is configured as `rag serve` configures it (api/serving.py)."""

    probe = "/readyz"

    def __init__(self, app: object, settings: Settings | None = None) -> None:
        from api.serving import server_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        where = {"host": "127.0.0.1", "port": self.port, "log_level": "warning"}
        config = server_config(app, settings, **where) if settings else uvicorn.Config(app, **where)  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}{self.probe}", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class StartedServer(LiveServer):
    """A LiveServer entered as soon as the process answers, whatever its index is doing."""

    probe = "/healthz"

    def wait_until(self, condition: Callable[[], bool], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not reach the expected state in {timeout} s")
            time.sleep(0.2)


class RagServe:
    """A real `rag serve` process (``--workers N``) on 127.0.0.1 and a free port, with `settings` as
    RAG_* variables; entered once every worker is ready, stopped with SIGTERM on exit. Its stderr
    (uvicorn's lines and one JSON line per request) goes to a file: `requests()` reads the latter."""

    def __init__(self, env: dict[str, str], workers: int = 1, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {**os.environ, **env, **settings}
        fd, name = tempfile.mkstemp(prefix="rag-serve-", suffix=".log")
        os.close(fd)
        self.log = Path(name)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RagServe:
        command = [sys.executable, "-m", "rag.cli.main", "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--workers", str(self.workers)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_ready(self, timeout: float = 300) -> None:
        """Until /metrics, which sums every worker, says each is ready: each worker loads the model
        (tens of seconds each on shared cores)."""
        slots = self.slots_each() * self.workers
        key = self.env.get("RAG_API_KEYS", "").split(",")[0]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"rag serve exited ({self.process.returncode}): {self.log.read_text()}")
            try:
                found = {}
                for line in httpx.get(f"{self.url}/metrics", headers=headers, timeout=5).text.splitlines():
                    name, _, number = line.partition(" ")
                    found[name] = number
                if found.get("rag_index_ready") == "1.0" and found.get("rag_expensive_slots") == f"{slots}.0":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"rag serve did not become ready: {self.log.read_text()[-3000:]}")

    def slots_each(self) -> int:
        """Each worker's RAG_MAX_CONCURRENT_ASKS."""
        default = Settings.model_fields["max_concurrent_asks"].default
        return int(self.env.get("RAG_MAX_CONCURRENT_ASKS", default))

    def requests(self) -> list[dict[str, Any]]:
        """The request log lines written so far."""
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"ts"')]

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process, signal.SIGTERM, timeout=90)
        self.log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def two_workers(settings: Settings, index: Index) -> Iterator[RagServe]:
    """`rag serve --workers 2` over the session's index: 2 s head and body timeouts, no rate limit.
    Per module: two workers hold ~1.4 GB, which the rest of a session need not keep waiting."""
    limits = {"RAG_HEADER_TIMEOUT": "2", "RAG_BODY_TIMEOUT": "2", "RAG_RATE_LIMIT": "0"}
    with RagServe(cli_env(settings), workers=2, **limits) as live:
        yield live


@dataclass
class Search:
    at: float  # time.monotonic() when the answer came
    status: int
    version: str | None  # X-Index-Version
    phrase: str
    found: bool  # a result's text holds the phrase


@dataclass
class Searching:
    """A client searching a live server for each of `phrases` in turn, over and over, with a
    /readyz after each round, while a test changes the index under it; every answer is kept."""

    url: str
    phrases: list[str]
    searches: list[Search] = field(default_factory=list)
    readyz: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)  # at, status, body
    errors: list[str] = field(default_factory=list)  # requests that got no answer at all
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Searching:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    for phrase in self.phrases:
                        r = client.post("/v1/search", json={"query": phrase, "k": 3})
                        hits = r.json()["results"] if r.status_code == 200 else []
                        found = any(phrase in hit["text"] for hit in hits)
                        version = r.headers.get("x-index-version")
                        self.searches.append(Search(time.monotonic(), r.status_code, version, phrase, found))
                    ready = client.get("/readyz")
                    self.readyz.append((time.monotonic(), ready.status_code, ready.json()))
                except (httpx.HTTPError, ValueError) as exc:  # no answer, or one that is not JSON
                    self.errors.append(repr(exc))
                    self.stop.wait(0.05)

    def failed(self) -> list[str]:
        """Every request that failed or answered other than 200."""
        return [
            *self.errors,
            *(f"search {s.phrase!r}: {s.status}" for s in self.searches if s.status != 200),
            *(f"/readyz: {status}" for _, status, _ in self.readyz if status != 200),
        ]

    def finds(self, phrase: str, since: float = 0.0) -> bool | None:
        """Whether the latest search for `phrase` answered after `since` found it (None: no answer yet)."""
        latest = [s for s in self.searches if s.phrase == phrase and s.at > since]
        return latest[-1].found if latest else None

    def wait_until(self, condition: Callable[[], object], timeout: float = 600) -> float:
        """Wait until `condition` holds (at most `timeout` s, generous: shared cores); when it did."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError(f"not reached in {timeout} s; failed requests: {self.failed()[:5]}")
            time.sleep(0.1)
        return time.monotonic()


@pytest.fixture(scope="session")
def server(settings: Settings, retriever: Retriever) -> Iterator[LiveServer]:
    from api.main import create_app

    with LiveServer(create_app(settings, retriever=retriever)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
