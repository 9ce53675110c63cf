"""`rag serve --workers 2`: a real subprocess with two uvicorn workers over the index built once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().partition("=")[::2] for p in pairs if b"=" in p)


def test_serve_two_workers_share_the_built_index_and_answer_searches(env: dict[str, str]) -> None:
    index_dir = Path(env["RAG_INDEX_DIR"])
    build_before = (index_dir / "current").resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli.main", "serve", "--port", str(port), "--workers", "2"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240  # two workers each load the model on shared cores
        ready = 0
        while ready < 10 and time.monotonic() < deadline:  # ten in a row: both workers are up
            try:
                ready = ready + 1 if httpx.get(f"{url}/readyz", timeout=5).status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
            time.sleep(0.2)
        assert ready == 10, "the workers never became ready"
        # uvicorn starts each worker with multiprocessing's spawn
        workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) >= 2
        # Unset here, so the parent made one secret for all: each worker names a key alike in logs.
        secrets = {_environ(p).get("RAG_KEY_ID_SECRET") for p in workers}
        assert len(secrets) == 1 and None not in secrets and "RAG_KEY_ID_SECRET" not in env
        with httpx.Client(base_url=url, timeout=30) as client:
            for query in ["pay progression", "Serco contracts", "Working Links collapse"] * 4:
                response = client.post("/v1/search", json={"query": query, "k": 3})
                assert response.status_code == 200
                assert len(response.json()["results"]) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (index_dir / "current").resolve() == build_before, "no worker rebuilt the index"
