"""Live reload: a running server picks up what `rag ingest` builds, with no failed or mixed request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, current_build, load
from rag.service import make_retriever
from rag.settings import Settings
from tests.conftest import LiveServer, Searching, writable
from tests.posts import write_post

PHRASE = "Zephyrine Quillfeather scheme"  # in no post of data/
RAG = str(Path(sys.executable).parent / "rag")


@pytest.fixture
def live_settings(settings: Settings, index: Index, tmp_path: Path) -> Settings:
    """A private copy of the session's data and built index, to add posts to and ingest with
    `rag ingest` (the server does not watch the folder here: tests/api/test_watch.py covers that)."""
    shutil.copytree(settings.data_dir, tmp_path / "data")
    shutil.copytree(settings.index_dir, tmp_path / "index", symlinks=True)
    # No rate limit: the client below searches as fast as it can, and every answer must be a 200.
    return Settings(
        data_dir=tmp_path / "data", index_dir=tmp_path / "index", rate_limit=0, watch=False, _env_file=None
    )  # type: ignore[call-arg]


def _ingest(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAG_DATA_DIR": str(settings.data_dir), "RAG_INDEX_DIR": str(settings.index_dir)}
    return subprocess.run([RAG, "ingest"], env=env, capture_output=True, text=True, timeout=600)


def test_server_serves_a_new_post_within_10s_of_ingest_without_a_failed_request(
    live_settings: Settings, model: Embedder
) -> None:
    before = load(live_settings.index_dir)
    app = create_app(live_settings, retriever=make_retriever(live_settings, before, model))
    with LiveServer(app) as server, Searching(server.url, [PHRASE]) as client:
        write_post(live_settings.data_dir, "005_new.txt", PHRASE)
        done = _ingest(live_settings)
        ended = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert "reused" in done.stdout
        while time.monotonic() < ended + 10 and not any(s.found for s in client.searches if s.at > ended):
            time.sleep(0.1)
        time.sleep(1)  # a few more requests on the new index

    old, new = before.manifest["build"], current_build(live_settings.index_dir)
    assert new != old
    assert client.failed() == []
    found_at = min(s.at for s in client.searches if s.found)
    assert found_at - ended <= 10
    # One index per request: the old one never holds the phrase, the new one always does.
    assert {(s.version, s.found) for s in client.searches} == {(old, False), (new, True)}
    assert {body["index_version"] for _, _, body in client.readyz} == {old, new}


def test_server_keeps_serving_when_a_new_build_fails_to_load(
    live_settings: Settings, model: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    before = load(live_settings.index_dir)
    app = create_app(live_settings, retriever=make_retriever(live_settings, before, model))
    with LiveServer(app) as server:
        broken = live_settings.index_dir / "build-broken"
        shutil.copytree(live_settings.index_dir / "current", broken)
        writable(broken / "chunks.jsonl").write_text("garbage", encoding="utf-8")
        tmp_link = live_settings.index_dir / ".current-test"
        tmp_link.symlink_to(broken.name)
        tmp_link.replace(live_settings.index_dir / "current")
        deadline = time.monotonic() + 10
        while "build-broken failed to load" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "build-broken failed to load" in caplog.text
        ready = httpx.get(f"{server.url}/readyz")
        search = httpx.post(f"{server.url}/v1/search", json={"query": "pay progression"})
    assert ready.status_code == 200 and ready.json()["index_version"] == before.manifest["build"]
    assert search.status_code == 200 and search.headers["x-index-version"] == before.manifest["build"]
    assert search.json()["results"]


def test_every_response_names_the_index_version(client: httpx.Client, index: Index) -> None:
    version = client.get("/readyz").json()["index_version"]
    assert version == index.manifest["build"]
    responses = [
        client.get("/healthz"),
        client.post("/v1/search", json={"query": "pay progression"}),
        client.post("/v1/search", json={"query": ""}),
        client.get("/v1/passages/000-nope"),
        client.get("/nowhere"),
    ]
    assert [r.headers.get("x-index-version") for r in responses] == [version] * len(responses)
