"""A server watching its data folder: posts added, changed and removed are searchable with no
command run, a file still being written is never taken half, a bad file is skipped and named, a
`rag ingest` started meanwhile waits its turn (or the server waits for it), and of several worker
processes only one watches. Every request answers 200 throughout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from api.watcher import PASS_CHARS, WHO, _passes
from rag.ingest.corpus import load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, current_build, load
from rag.ingest.runs import watch_lock
from rag.service import make_retriever
from rag.settings import Settings
from rag.synth import SynthSpec, generate
from tests.conftest import DATA, LiveServer, RagServe, Searching, cli_env
from tests.posts import post_text, write_post

ADDED = "Zephyrine Quillfeather scheme"  # in no post of data/
CHANGED = "Ambrosial Quackenbush plan"
RAG = str(Path(sys.executable).parent / "rag")


@pytest.fixture
def folder(settings: Settings, index: Index, tmp_path: Path) -> Settings:
    """A private copy of the session's data and built index, watched (settle 1 s), no rate limit."""
    shutil.copytree(settings.data_dir, tmp_path / "data")
    shutil.copytree(settings.index_dir, tmp_path / "index", symlinks=True)
    return Settings(
        data_dir=tmp_path / "data",
        index_dir=tmp_path / "index",
        rate_limit=0,
        watch_settle=1.0,
        _env_file=None,
    )


@pytest.fixture
def served(folder: Settings, model: Embedder) -> Iterator[LiveServer]:
    """A real server over the copy, with the session's model, once it watches the folder."""
    app = create_app(folder, retriever=make_retriever(folder, load(folder.index_dir), model))
    with LiveServer(app) as live:
        deadline = time.monotonic() + 120
        while not httpx.get(f"{live.url}/readyz").json()["watching"]:
            assert time.monotonic() < deadline, "the server never started watching"
            time.sleep(0.1)
        yield live


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _documents(url: str) -> set[str]:
    return {d["id"] for d in httpx.get(f"{url}/v1/documents").json()["documents"]}


def test_watching_server_serves_a_post_added_changed_and_removed_with_no_command_run(
    folder: Settings, served: LiveServer
) -> None:
    post = folder.data_dir / "005_new.txt"
    with Searching(served.url, [ADDED, CHANGED]) as client:
        write_post(folder.data_dir, post.name, ADDED)
        client.wait_until(lambda: client.finds(ADDED))
        assert "005_new" in _documents(served.url)
        write_post(folder.data_dir, post.name, CHANGED)  # the same post, one reply reworded
        changed = time.monotonic()
        client.wait_until(lambda: client.finds(CHANGED) and client.finds(ADDED, since=changed) is False)
        post.unlink()
        removed = time.monotonic()
        client.wait_until(lambda: client.finds(CHANGED, since=removed) is False)
        assert "005_new" not in _documents(served.url)
    assert client.failed() == []
    # One index per request: each build either holds a phrase for every search or for none.
    answers: dict[tuple[str | None, str], set[bool]] = {}
    for s in client.searches:
        answers.setdefault((s.version, s.phrase), set()).add(s.found)
    assert all(len(found) == 1 for found in answers.values())
    ready = httpx.get(f"{served.url}/readyz").json()
    assert ready["watching"] is True and ready["ingesting_since"] is None
    last = ready["last_ingest"]
    assert (last["by"], last["outcome"], last["build"]) == (WHO, "ok", ready["index_version"])
    assert last["skipped"] == [] and last["encoded"] == 0, "removing a post encodes nothing"
    assert _metric(served.url, 'rag_ingest_total{outcome="ok"}') >= 3
    assert _metric(served.url, 'rag_ingest_total{outcome="failed"}') == 0
    assert _metric(served.url, "rag_ingest_watching") == 1
    assert _metric(served.url, 'rag_query_passes_total{lane="ingest"}') > 0, "encoded on the ingest lane"
    # What the server wrote is a normal build: a restart (a fresh load) serves the same corpus.
    assert load(folder.index_dir).manifest["corpus_fingerprint"] == load_corpus(folder.data_dir).fingerprint


def test_watching_server_takes_a_post_only_once_it_is_whole(folder: Settings, served: LiveServer) -> None:
    comments: list[tuple[str, list[str]]] = [
        (f"Comment {n} on the review of unpaid work placements.", []) for n in range(1, 30)
    ]
    comments.append((f"The last comment names the {ADDED}.", []))
    text = post_text("Unpaid Work Under Review", "Tuesday, 9 March 2021", ["A body."], comments)
    lines = text.splitlines(keepends=True)
    first = httpx.get(f"{served.url}/readyz").json()
    before, version = first["last_ingest"], first["index_version"]
    with Searching(served.url, [ADDED, CHANGED]) as client:
        # Written slowly, in place, a line every 50 ms for ~3 s: never still for the settle second.
        # An ingest may start in a pause of the writer's, but publishes nothing of a half file.
        path = folder.data_dir / "005_slow.txt"
        with path.open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line)
                fh.flush()
                time.sleep(0.05)
                ready = httpx.get(f"{served.url}/readyz").json()
                assert (ready["last_ingest"], ready["index_version"]) == (before, version), "taken half"
        client.wait_until(lambda: client.finds(ADDED))
        assert _metric(served.url, 'rag_ingest_total{outcome="ok"}') == 1, "one ingest, of the whole file"
        doc = httpx.get(f"{served.url}/v1/documents/005_slow").json()
        assert len(doc["comments"]) == len(comments) and ADDED in doc["comments"][-1]["text"]
        # Written under a hidden name and renamed into place: taken whole, after one settle.
        tmp = folder.data_dir / ".005_renamed.txt.tmp"
        tmp.write_text(text.replace(ADDED, CHANGED), encoding="utf-8")
        os.replace(tmp, folder.data_dir / "005_renamed.txt")
        client.wait_until(lambda: client.finds(CHANGED))
    assert client.failed() == []
    assert _metric(served.url, 'rag_ingest_total{outcome="ok"}') == 2


def test_watching_server_drops_an_ingest_begun_in_a_writers_pause_and_publishes_the_whole_file(
    folder: Settings, served: LiveServer
) -> None:
    """An ingest starts once changes pause (a fifth of the settle time) and saves only if what it
    read then holds still for all of it: a writer that resumes within the settle time has the build
    of its half file dropped, and the whole file is published after."""
    comments = [(f"Comment {n} on the review of unpaid work placements.", []) for n in range(1, 30)]
    comments.append((f"The last comment names the {ADDED}.", []))
    text = post_text("Unpaid Work Under Review", "Tuesday, 9 March 2021", ["A body."], comments)
    half = len(text) // 2
    first = httpx.get(f"{served.url}/readyz").json()
    with Searching(served.url, [ADDED]) as client:
        path = folder.data_dir / "005_paused.txt"
        with path.open("w", encoding="utf-8") as fh:
            fh.write(text[:half])
            fh.flush()
            deadline = time.monotonic() + 60
            while httpx.get(f"{served.url}/readyz").json()["ingesting_since"] is None:  # it began
                assert time.monotonic() < deadline, "no ingest began in the writer's pause"
                time.sleep(0.02)
            time.sleep(0.3)  # it has read the half file, and waits for it to hold still 1 s
            fh.write(text[half:])
        client.wait_until(lambda: client.finds(ADDED))
        ready = httpx.get(f"{served.url}/readyz").json()
    assert client.failed() == []
    assert _metric(served.url, 'rag_ingest_total{outcome="restarted"}') >= 1, (
        "the half file's build was dropped"
    )
    assert _metric(served.url, 'rag_ingest_total{outcome="ok"}') == 1, "one build published: the whole file"
    assert ready["index_version"] != first["index_version"] and ready["last_ingest"]["outcome"] == "ok"
    doc = httpx.get(f"{served.url}/v1/documents/005_paused").json()
    assert len(doc["comments"]) == len(comments) and ADDED in doc["comments"][-1]["text"]


def test_watching_server_skips_a_bad_file_naming_file_and_line_and_ingests_the_rest(
    folder: Settings, served: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with Searching(served.url, [ADDED]) as client:
        (folder.data_dir / "006_bad.txt").write_bytes(b"Friday 1 March 2019\n\nA title\n\x00binary\n")
        write_post(folder.data_dir, "005_new.txt", ADDED)
        client.wait_until(lambda: client.finds(ADDED))
    assert client.failed() == []
    last = httpx.get(f"{served.url}/readyz").json()["last_ingest"]
    assert last["outcome"] == "ok"
    assert last["skipped"] == ["006_bad.txt:4: binary data (a NUL byte), not a post export"]
    assert "skipped 006_bad.txt:4: binary data" in caplog.text
    assert _documents(served.url) == {p.stem for p in DATA.glob("*.txt")} | {"005_new"}


def test_rag_ingest_started_while_the_server_ingests_waits_its_turn_and_both_builds_are_whole(
    folder: Settings, served: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Posts land and `rag ingest` starts at once: whichever takes the lock second waits for the
    other, saying what holds it, and nothing is lost or mixed."""
    names = []
    for name, text in generate(DATA, SynthSpec(posts=2, comments=20, seed=7)):
        (folder.data_dir / f"9_{name}").write_text(text, encoding="utf-8")
        names.append(f"9_{name}")
    env = {**os.environ, "RAG_DATA_DIR": str(folder.data_dir), "RAG_INDEX_DIR": str(folder.index_dir)}
    with Searching(served.url, ["probation"]) as client:
        cli = subprocess.run([RAG, "ingest"], env=env, capture_output=True, text=True, timeout=1800)
        assert cli.returncode == 0, cli.stderr
        client.wait_until(
            lambda: (
                _serves_current(served.url, folder)
                and {Path(n).stem for n in names} <= _documents(served.url)
            )
        )
    said = " ".join(cli.stderr.split())
    cli_waited = f"waiting for the ingest lock: {WHO} (pid {os.getpid()})" in said
    server_waited = "waiting for the ingest lock: rag ingest (pid" in caplog.text
    assert cli_waited != server_waited, "exactly one of the two came second and waited for the other"
    assert client.failed() == []
    current = load(folder.index_dir)  # whole: every checksum passes
    assert current.manifest["corpus_fingerprint"] == load_corpus(folder.data_dir).fingerprint


def _serves_current(url: str, folder: Settings) -> bool:
    ready = httpx.get(f"{url}/readyz").json()
    return ready["ingesting_since"] is None and ready["index_version"] == current_build(folder.index_dir)


def test_server_with_watch_off_does_not_watch(folder: Settings, model: Embedder) -> None:
    off = folder.model_copy(update={"watch": False})
    app = create_app(off, retriever=make_retriever(off, load(off.index_dir), model))
    with LiveServer(app) as live:
        assert httpx.get(f"{live.url}/readyz").json()["watching"] is False
        assert _metric(live.url, "rag_ingest_watching") == 0
    with watch_lock(off.index_dir, "a test") as election:
        assert election.try_acquire(), "nobody took the watch"


def test_serve_with_two_workers_watches_and_ingests_in_one_process_only(folder: Settings) -> None:
    env = cli_env(folder)
    with RagServe(env, workers=2, RAG_RATE_LIMIT="0", RAG_WATCH_SETTLE="1") as live:
        with Searching(live.url, [ADDED]) as client:
            write_post(folder.data_dir, "005_new.txt", ADDED)
            client.wait_until(lambda: client.finds(ADDED))
            # Twenty searches in a row find it, whichever worker answers (the other reloads it).
            last = client.searches
            client.wait_until(lambda: len(last) > 20 and all(s.found for s in last[-20:]))
        log = live.log.read_text()
        assert client.failed() == []
        assert _metric(live.url, "rag_ingest_watching") == 1  # the server watches: one of its workers
        assert _metric(live.url, 'rag_ingest_total{outcome="ok"}') == 1
    assert len(re.findall(rf"^watching {re.escape(str(folder.data_dir))}:", log, re.MULTILINE)) == 1, log
    assert log.count("ingested 005_new.txt") == 1, log


def test_ingest_passes_are_short_runs_of_the_texts_in_order() -> None:
    texts = ["x" * 1500, "y" * 900, "z" * 600, "w" * 5000, "v" * 10, "u" * 10]
    passes = _passes(texts)
    assert [t for piece in passes for t in piece] == texts
    assert [len(piece) for piece in passes] == [1, 2, 1, 2]  # at most PASS_CHARS, or one longer text
    assert all(sum(map(len, piece)) <= PASS_CHARS or len(piece) == 1 for piece in passes)
