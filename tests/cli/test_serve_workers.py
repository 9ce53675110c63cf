"""`rag serve --workers 2`: a real subprocess with two workers over the index built once, each the
same server as one process (tests/api/test_serving.py, test_limits.py and test_telemetry.py run
their server tests against two workers too); a worker that dies is replaced."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import RagServe

SEARCH_ROUTE = 'rag_http_requests_total{method="POST",route="/v1/search",status="200"}'


def _workers(pid: int) -> list[int]:
    """The worker processes: multiprocessing's spawn starts each as `... spawn_main ...`."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in children if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]


def _searches(url: str, n: int) -> list[httpx.Response]:
    queries = ["pay progression", "Serco contracts", "Working Links collapse"]
    with httpx.Client(base_url=url, timeout=30) as client:
        return [client.post("/v1/search", json={"query": queries[i % 3], "k": 3}) for i in range(n)]


def test_serve_two_workers_share_the_built_index_and_answer_searches(env: dict[str, str]) -> None:
    index_dir = Path(env["RAG_INDEX_DIR"])
    build_before = (index_dir / "current").resolve()
    with RagServe(env, workers=2) as live:
        assert live.process is not None
        assert len(_workers(live.process.pid)) == 2
        for response in _searches(live.url, 12):
            assert response.status_code == 200
            assert len(response.json()["results"]) == 3
    assert (index_dir / "current").resolve() == build_before, "no worker rebuilt the index"


def test_serve_worker_that_dies_is_replaced_and_the_counts_it_made_stay(env: dict[str, str]) -> None:
    with RagServe(env, workers=2) as live:
        assert live.process is not None
        assert {r.status_code for r in _searches(live.url, 10)} == {200}
        workers = _workers(live.process.pid)
        os.kill(workers[0], signal.SIGKILL)  # a crash: no shutdown of its own
        deadline = time.monotonic() + 60
        while len(now := _workers(live.process.pid)) < 2 or workers[0] in now:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        live.wait_ready()  # every worker ready again: the new one loaded the index
        metrics = httpx.get(f"{live.url}/metrics", timeout=30).text
        assert f"{SEARCH_ROUTE} 10.0" in metrics  # the dead worker's share is still counted
        assert {r.status_code for r in _searches(live.url, 3)} == {200}


def test_serve_workers_name_a_key_alike_under_one_secret(env: dict[str, str]) -> None:
    # RAG_KEY_ID_SECRET unset: the parent makes one secret for all workers, so each logs (and rate
    # limits) a key under the same id whichever worker answers.
    assert "RAG_KEY_ID_SECRET" not in env
    with RagServe(env, workers=2, RAG_API_KEYS="a-long-test-key") as live:
        headers = {"Authorization": "Bearer a-long-test-key"}
        for _ in range(16):  # a connection each: the kernel spreads them over the workers
            response = httpx.post(f"{live.url}/v1/search", json={"query": "pay", "k": 1}, headers=headers)
            assert response.status_code == 200
        lines = [r for r in live.requests() if r["route"] == "/v1/search"]
        assert len({r["pid"] for r in lines}) == 2, "both workers answered"
        assert len({r["key"] for r in lines}) == 1
        assert "a-long-test-key" not in live.log.read_text()
