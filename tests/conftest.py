"""Shared fixtures: the real MiniLM model (loaded once), a real index built from data/ in a temp
directory, and a real uvicorn server on 127.0.0.1 serving it.

Nothing here is mocked; tests that need their own index build it in `tmp_path` from a copy of
the model handle (`Embedder.from_loaded`).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


@pytest.fixture
def env(settings: Settings, index: Index) -> dict[str, str]:
    """Environment for a CLI run that reuses the session's already built index."""
    return {
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_INDEX_DIR": str(settings.index_dir),
        "HF_HUB_OFFLINE": "1",
    }


def writable(path: Path) -> Path:
    """`path` made writable by its owner: a saved build's files are read-only (rag.ingest.index), so a
    test that damages one must first do what a person editing it by hand would have to."""
    path.chmod(0o644)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, on 127.0.0.1 and a free port; entered once `probe` answers 200."""

    probe = "/readyz"

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")  # type: ignore[arg-type]
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


@pytest.fixture(scope="session")
def server(settings: Settings, retriever: Retriever) -> Iterator[LiveServer]:
    from api.main import create_app

    with LiveServer(create_app(settings, retriever=retriever)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
