"""Faults in the index and while writing it: a file of any type truncated or with a byte flipped, an
ingest killed mid-way, the disk filling while an index is written, index files a server cannot read.
The old index always survives and still loads; a damaged one never loads; a server without an index
answers 503 with a clear message and none of its paths. Real subprocesses, signals and file-size limits."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from api.main import create_app
from rag.errors import IndexIncompatibleError, IndexWriteError
from rag.ingest.corpus import load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.index import Index, IndexConfig, build, load, read_manifest, save
from rag.ingest.runs import read_record
from rag.service import open_index
from rag.settings import Settings
from tests.conftest import DATA, StartedServer, free_port, stop, writable

RAG = str(Path(sys.executable).with_name("rag"))
SMALL = ("002_c9ebe3be5a93ccd6.txt", "003_ea05dc3451fe564a.txt")
FILES = (
    "manifest.json",
    "documents.json",
    "chunks.jsonl",
    "chunks.npy",
    "sentences.json",
    "sentences.npy",
)
CONFIG = IndexConfig(
    "bundled", Settings.model_fields["chunk_size"].default, Settings.model_fields["chunk_overlap"].default
)
FILE_LIMIT = 64 * 1024  # bytes a process may write to one file in the disk-full tests


@pytest.fixture(scope="module")
def small(model: Embedder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Index]:
    """A two-post corpus and its index, so rebuilding stays quick."""
    data = tmp_path_factory.mktemp("small")
    for name in SMALL:
        shutil.copy(DATA / name, data / name)
    return data, build(load_corpus(data), model, CONFIG)


def _settings(data: Path, index_dir: Path, **kw: Any) -> Settings:
    return Settings(data_dir=data, index_dir=index_dir, _env_file=None, **kw)


def _env(data: Path, index_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RAG_DATA_DIR": str(data),
        "RAG_INDEX_DIR": str(index_dir),
        "COLUMNS": "200",
        **extra,
    }


def _file_size_limit(limit: int = FILE_LIMIT) -> None:
    """In the child before exec: a full disk, as far as the child can tell. Writes past `limit` bytes
    fail with EFBIG (SIGXFSZ ignored, so the write fails instead of killing the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _damage(path: Path, how: str) -> None:
    data = writable(path).read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "last byte cut":
        path.write_bytes(data[:-1])
    else:  # one bit flipped in the middle, the file's length unchanged
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :])


@pytest.mark.parametrize("how", ["truncated", "last byte cut", "bit flipped"])
@pytest.mark.parametrize("victim", FILES)
def test_damaged_index_file_of_every_type_is_refused_with_a_clear_error(
    small: tuple[Path, Index], tmp_path: Path, victim: str, how: str
) -> None:
    _, built = small
    save(built, tmp_path)
    _damage((tmp_path / "current" / victim).resolve(), how)
    with pytest.raises(IndexIncompatibleError) as info:
        load(tmp_path)
    assert "corrupt" in info.value.message or victim in info.value.message
    assert "rag ingest" in info.value.message


def test_damaged_index_is_rebuilt_by_default_and_refused_when_set_to(
    small: tuple[Path, Index], tmp_path: Path, embedder: Embedder
) -> None:
    data, built = small
    save(built, tmp_path)
    _damage((tmp_path / "current" / "sentences.npy").resolve(), "bit flipped")
    with pytest.raises(IndexIncompatibleError, match="RAG_ON_STALE=refuse"):
        open_index(_settings(data, tmp_path, on_stale="refuse"), embedder)
    opened = open_index(_settings(data, tmp_path), embedder)
    assert opened.rebuilt and "sentences.npy" in (opened.reason or "")
    reloaded = load(tmp_path)  # the rebuilt index is whole, and the same as before the damage
    assert np.allclose(reloaded.sentence_vectors, built.sentence_vectors, atol=1e-5)


def _ingest(data: Path, index_dir: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAG, "ingest"], env=_env(data, index_dir), capture_output=True, text=True, timeout=900, **kw
    )


@pytest.fixture
def ingested(small: tuple[Path, Index], tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The small corpus's index on disk, and its manifest."""
    data, built = small
    index_dir = tmp_path / "index"
    save(built, index_dir)
    return data, index_dir, read_manifest(index_dir)


def test_ingest_killed_while_embedding_leaves_the_previous_index_loading_and_serving(
    ingested: tuple[Path, Path, dict[str, Any]],
) -> None:
    data, index_dir, before = ingested
    child = subprocess.Popen(  # --full: encode every text, not only those the current index lacks
        [RAG, "ingest", "--full"],
        env=_env(data, index_dir),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert child.stderr is not None
    for line in child.stderr:  # the progress lines a log gets: kill at the first embedding batch
        if line.startswith("embedding"):
            child.send_signal(signal.SIGKILL)
            break
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert read_manifest(index_dir) == before
    assert len(load(index_dir).chunks) == before["chunks"]
    with StartedServer(create_app(_settings(data, index_dir))) as live, httpx.Client(base_url=live.url) as c:
        ready = _wait_for(live.url, "ready")
        assert {k: ready[k] for k in ("status", "documents", "chunks", "index_version")} == {
            "status": "ready",
            "documents": 2,
            "chunks": before["chunks"],
            "index_version": before["build"],  # the build that was current before the kill
        }
        assert c.post("/v1/search", json={"query": "probation manifesto"}).status_code == 200
        # A loaded server holds its index in memory: files that vanish later do not stop it.
        shutil.rmtree((index_dir / "current").resolve())
        assert c.post("/v1/search", json={"query": "probation manifesto"}, timeout=30).status_code == 200


def test_next_ingest_removes_the_folder_a_killed_save_leaves(
    ingested: tuple[Path, Path, dict[str, Any]],
) -> None:
    data, index_dir, before = ingested
    # What a save killed mid-way leaves: its own build folder, some files written, no manifest.
    orphan = index_dir / "build-0123456789ab-deadbeef"
    orphan.mkdir()
    (orphan / "documents.json").write_text("[{", encoding="utf-8")
    assert read_manifest(index_dir) == before, "current never points at an unfinished build"
    run = _ingest(data, index_dir)
    assert run.returncode == 0, run.stderr
    assert not orphan.exists()
    builds = {p.name for p in index_dir.glob("build-*")}
    assert builds == {(index_dir / "current").resolve().name, before["build"]}, "the new and the previous"


def test_ingest_on_a_full_disk_keeps_the_previous_index_and_says_why(
    ingested: tuple[Path, Path, dict[str, Any]],
) -> None:
    data, index_dir, before = ingested
    run = _ingest(data, index_dir, preexec_fn=_file_size_limit, restore_signals=False)
    assert run.returncode == 1
    assert "error: could not write the index to" in run.stderr
    assert "(File too large); the previous index is kept" in run.stderr
    assert "Traceback" not in run.stderr
    record = read_record(index_dir)  # what /readyz and /metrics report
    assert record is not None and record.outcome == "failed" and "File too large" in (record.error or "")
    assert read_manifest(index_dir) == before
    assert len(load(index_dir).chunks) == before["chunks"]
    assert [p.name for p in index_dir.glob("build-*")] == [(index_dir / "current").resolve().name]


def test_save_on_a_full_disk_raises_index_write_error_and_keeps_the_previous_index(
    small: tuple[Path, Index], tmp_path: Path
) -> None:
    """The same in-process, for every file the limit can catch: the limit is set per call in a child."""
    _, built = small
    save(built, tmp_path)
    before = read_manifest(tmp_path)
    script = (
        "import sys, pathlib, pickle; from rag.ingest.index import load, save;"
        "index = load(pathlib.Path(sys.argv[1]));"
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])));"
        "from rag.errors import IndexWriteError\n"
        "try:\n    save(index, pathlib.Path(sys.argv[1]))\n"
        "except IndexWriteError as exc:\n    print(exc.message)"
    )
    sizes = sorted(p.stat().st_size for p in (tmp_path / "current").resolve().iterdir())
    for limit in {sizes[0] // 2, sizes[len(sizes) // 2] - 1, sizes[-1] - 1}:
        run = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), str(limit)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "the previous index is kept" in run.stdout, (limit, run.stdout, run.stderr)
        assert read_manifest(tmp_path) == before
        assert len(list(tmp_path.glob("build-*"))) == 1
    assert IndexWriteError.status == 503


@pytest.fixture
def stale(small: tuple[Path, Index], tmp_path: Path, model: Embedder) -> tuple[Path, Path, dict[str, Any]]:
    """An index built with other chunking than the settings ask for, so a server will rebuild it."""
    data, _ = small
    index_dir = tmp_path / "index"
    save(build(load_corpus(data), model, IndexConfig("bundled", 128, 16)), index_dir)
    return data, index_dir, read_manifest(index_dir)


@pytest.fixture
def serve_with_full_disk(
    stale: tuple[Path, Path, dict[str, Any]],
) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """A real `rag serve` whose files may not grow past FILE_LIMIT, over a stale index it must rebuild."""
    data, index_dir, before = stale
    with _serving(data, index_dir, preexec_fn=_file_size_limit, restore_signals=False) as (url, _, log):
        yield url, index_dir, before
    assert "File too large" in "".join(log), "the server log keeps the cause"


@contextmanager
def _serving(
    data: Path, index_dir: Path, env: dict[str, str] | None = None, **popen: Any
) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    """A real `rag serve` subprocess (a fault that kills it must not kill pytest). Its log is drained
    as it comes (a log file would meet a file-size limit too) and complete once this exits."""
    port = free_port()
    child = subprocess.Popen(
        [RAG, "serve", "--port", str(port)],
        env=_env(data, index_dir, **(env or {})),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(child.stderr or ()), daemon=True)
    reader.start()
    try:
        yield f"http://127.0.0.1:{port}", child, log
    finally:
        stop(child)
        reader.join(timeout=10)


def _wait_for(url: str, state: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body: dict[str, Any] = httpx.get(f"{url}/readyz", timeout=5).json()
            if body["status"] == state:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/readyz never said {state!r}")


def test_server_on_a_full_disk_answers_503_without_paths_and_the_old_index_survives(
    serve_with_full_disk: tuple[str, Path, dict[str, Any]],
) -> None:
    url, index_dir, before = serve_with_full_disk
    ready = _wait_for(url, "error")
    for method, path, body in [
        ("POST", "/v1/search", {"query": "probation"}),
        ("POST", "/v1/ask", {"question": "what is the manifesto?"}),
        ("GET", "/v1/documents", None),
    ]:
        r = httpx.request(method, f"{url}{path}", json=body, timeout=30)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "index_unavailable"
        assert "could not be read or written (File too large)" in error["message"]
        assert "/" not in error["message"] and str(index_dir) not in r.text
        assert ready["detail"] == error["message"]
    assert read_manifest(index_dir) == before
    assert load(index_dir).manifest["chunking"]["size"] == 128, "the old index is whole and still loads"


def test_server_whose_index_files_cannot_be_read_answers_503_without_paths(
    small: tuple[Path, Index], tmp_path: Path
) -> None:
    data, built = small
    save(built, tmp_path)
    victim = (tmp_path / "current" / "chunks.npy").resolve()
    victim.unlink()
    victim.mkdir()  # unreadable as a file whoever the tests run as (chmod 000 does not stop root)
    settings = _settings(data, tmp_path, on_stale="refuse")
    with StartedServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        ready = _wait_for(live.url, "error")
        r = c.post("/v1/search", json={"query": "probation"})
        assert r.status_code == 503
        assert r.json()["error"] == {"code": "index_unavailable", "message": ready["detail"]}
        assert "could not be read or written (Is a directory)" in ready["detail"]
        assert str(tmp_path) not in r.text and "chunks.npy" not in r.text


# ---------------------------------------------------------------- a live file changed in place


def _truncate_largest_vectors(index_dir: Path) -> Path:
    """`truncate -s 4096` on the served build's largest .npy, in place, as issue 18 found it."""
    victim = max((index_dir / "current").resolve().rglob("*.npy"), key=lambda p: p.stat().st_size)
    assert victim.stat().st_size > 4096
    subprocess.run(["truncate", "-s", "4096", str(writable(victim))], check=True)
    return victim


def _search(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json={"query": "probation manifesto"}, timeout=60)


def test_server_whose_largest_vector_file_is_truncated_in_place_stays_up_and_keeps_serving(
    ingested: tuple[Path, Path, dict[str, Any]],
) -> None:
    data, index_dir, before = ingested
    with _serving(data, index_dir, {"RAG_RELOAD_INTERVAL": "0.2"}) as (url, child, log):
        _wait_for(url, "ready")
        assert _search(url).status_code == 200
        victim = _truncate_largest_vectors(index_dir)
        for _ in range(10):  # a small index is held in memory: the cut file is never read again
            r = _search(url)
            assert r.status_code == 200 and r.json()["results"], r.text
        deadline = time.monotonic() + 30
        while "changed on disk in place" not in "".join(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"{victim.name} changed on disk in place; still serving the copy" in "".join(log)
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").json()["index_version"] == before["build"]
        assert child.poll() is None, "the process is still up"


def test_server_with_a_mapped_index_truncated_in_place_answers_503_until_a_good_build(
    small: tuple[Path, Index], ingested: tuple[Path, Path, dict[str, Any]]
) -> None:
    _, built = small
    data, index_dir, before = ingested
    with _serving(data, index_dir, {"RAG_RELOAD_INTERVAL": "0.2", "RAG_MAP_ABOVE_MB": "0"}) as (
        url,
        child,
        _,
    ):
        _wait_for(url, "ready")
        assert _search(url).status_code == 200  # the mapped pages are in use
        _truncate_largest_vectors(index_dir)
        ready = _wait_for(url, "error", timeout=60)  # noticed before anything read past the cut
        r = _search(url)
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_unavailable", r.text
        assert r.json()["error"]["message"] == ready["detail"]
        assert "changed on disk" in ready["detail"] and str(index_dir) not in r.text
        assert httpx.get(f"{url}/healthz").status_code == 200
        save(built, index_dir)  # the next good build
        assert _wait_for(url, "ready", timeout=120)["index_version"] != before["build"]
        assert _search(url).status_code == 200
        assert child.poll() is None, "the process is still up"


def test_mapped_index_cut_between_two_requests_is_refused_by_the_next_one(
    ingested: tuple[Path, Path, dict[str, Any]],
) -> None:
    """With the loader's periodic check off, the check each request makes as it takes a mapped
    index is what stands between a cut file and SIGBUS: the very next search gets a 503."""
    data, index_dir, _ = ingested
    with _serving(data, index_dir, {"RAG_RELOAD_INTERVAL": "0", "RAG_MAP_ABOVE_MB": "0"}) as (url, child, _):
        _wait_for(url, "ready")
        assert _search(url).status_code == 200  # the mapped pages are in use
        _truncate_largest_vectors(index_dir)
        r = _search(url)
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_unavailable", r.text
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert child.poll() is None, "the process is still up"


def test_truncating_a_saved_vector_file_is_refused_even_to_its_owner(small: tuple[Path, Index]) -> None:
    """Read-only build files stop the ordinary in-place writers (truncate, cp or rsync --inplace
    over a file) of anyone but root. The build is made by and belongs to an unprivileged user."""
    _, built = small
    directory = Path(tempfile.mkdtemp())
    try:
        directory.chmod(0o755)  # reachable by the unprivileged owner below
        build_dir = save(built, directory)
        victim = max(build_dir.rglob("*.npy"), key=lambda p: p.stat().st_size)
        owner: dict[str, Any] = {}
        if os.geteuid() == 0:  # root may write anything: hand the build to `nobody` and act as it
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, 65534, 65534, follow_symlinks=False)
            owner = {"user": 65534, "group": 65534, "extra_groups": []}
        for command in (["truncate", "-s", "4096", str(victim)], ["cp", "/dev/null", str(victim)]):
            run = subprocess.run(command, capture_output=True, text=True, **owner)
            assert run.returncode != 0 and "Permission denied" in run.stderr, (command, run.stderr)
        assert len(load(directory).sentences) == len(built.sentences), "the build is whole"
    finally:
        shutil.rmtree(directory)
