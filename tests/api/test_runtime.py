"""A server on each runtime (RAG_RUNTIME): it loads its own model, turns ready, and answers searches
with the passages the in-process retriever ranks, so the runtime changes speed and nothing else."""

from __future__ import annotations

import json

import httpx
import pytest

from api.main import create_app
from rag.ingest.index import Index
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import DEV, LiveServer

QUERIES = [json.loads(line)["question"] for line in DEV.read_text(encoding="utf-8").splitlines()[:6]]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_server_on_each_runtime_returns_the_in_process_rankings(
    runtime: str, settings: Settings, index: Index, retriever: Retriever
) -> None:
    own = settings.model_copy(update={"runtime": runtime})
    with LiveServer(create_app(own)) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        for query in QUERIES:
            response = client.post("/v1/search", json={"query": query, "k": 5})
            assert response.status_code == 200, response.text
            served = [hit["id"] for hit in response.json()["results"]]
            assert served == [hit.chunk.id for hit in retriever.search(query, k=5)], query
        # A batch request: one padded pass over queries of different lengths, the same rankings.
        batch = client.post("/v1/search/batch", json={"queries": [{"query": q, "k": 5} for q in QUERIES]})
        assert batch.status_code == 200, batch.text
        for query, result in zip(QUERIES, batch.json()["responses"], strict=True):
            assert [h["id"] for h in result["results"]] == [h.chunk.id for h in retriever.search(query, k=5)]
