"""The OpenAI-compatible endpoints, driven by the official openai client against a live server."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from rag.backends.extractive import gives_answer_type
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer

QUESTION = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"


@pytest.fixture
def oai(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_archive_and_each_backend(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids[0] == "archive" and "archive/extractive" in ids


def test_chat_completion_has_citations(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="archive", messages=[{"role": "user", "content": QUESTION}]
    )
    content = completion.choices[0].message.content or ""
    assert "April 2021" in content and "[1]" in content
    extra = completion.model_extra or {}
    citations = extra["citations"]
    assert citations[0]["n"] == 1 and "April 2021" in citations[0]["text"]
    assert set(citations[0]) == {"n", "id", "text", "score", "citation"}
    assert extra["rewritten_query"] == QUESTION and extra["abstained"] is False
    assert extra["support"]["level"] == "strong"


def test_chat_completion_stream_has_citations_in_last_chunk(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="archive/extractive", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "April 2021" in content and "[1]" in content
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    citations = (last.model_extra or {})["citations"]
    assert [c["n"] for c in citations] == sorted(c["n"] for c in citations) and citations


def test_chat_follow_up_is_rewritten_and_shown(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="archive",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What did Gauke say about short prison sentences?"},
            {"role": "assistant", "content": "He wants fewer of them [1]."},
            {"role": "user", "content": "what did commenters say about that?"},
        ],
    )
    rewritten = (completion.model_extra or {})["rewritten_query"]
    assert rewritten.endswith("what did commenters say about that?") and "Gauke" in rewritten


def test_chat_who_follow_up_names_someone_instead_of_repeating(oai: openai.OpenAI) -> None:
    first_question = {"role": "user", "content": "What was Transforming Rehabilitation?"}
    first = oai.chat.completions.create(model="archive", messages=[first_question])
    first_answer = first.choices[0].message.content or ""
    follow_up = oai.chat.completions.create(
        model="archive",
        messages=[
            first_question,
            {"role": "assistant", "content": first_answer},
            {"role": "user", "content": "Who criticised it?"},
        ],
    )
    extra = follow_up.model_extra or {}
    answer = follow_up.choices[0].message.content or ""
    assert "Transforming Rehabilitation" in extra["rewritten_query"]
    assert answer != first_answer and not extra["abstained"]
    # Every quoted sentence names someone the rewritten question does not name.
    for sentence in re.split(r"\s*\[\d+\]\s*", answer):
        if sentence:
            assert gives_answer_type(extra["rewritten_query"], sentence), sentence


def test_chat_unknown_model_is_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="known backends"):
        oai.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": QUESTION}])


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "assistant", "content": "hi"}], [{"role": "user", "content": "  "}]],
)
def test_chat_without_a_question_is_422(client: httpx.Client, messages: list[dict[str, str]]) -> None:
    response = client.post("/v1/chat/completions", json={"model": "archive", "messages": messages})
    assert response.status_code == 422


def test_models_follow_each_apps_own_allow_list(settings: Settings, retriever: Retriever) -> None:
    from api.main import create_app

    for allow, expected in (("openai", ["archive", "archive/openai"]), (None, None)):
        app = create_app(settings.model_copy(update={"backends_allow": allow}), retriever=retriever)
        with TestClient(app) as http:
            ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
        if expected is not None:
            assert ids == expected
        else:
            assert {"archive/extractive", "archive/openai", "archive/local"} <= set(ids)


def test_chat_over_the_rate_limit_gets_a_429_the_openai_client_waits_out(
    settings: Settings, retriever: Retriever
) -> None:
    from api.main import create_app

    # One request per 5 s for the client's key, so the refusals stay certain on a busy machine; the
    # test reads /metrics with a second key, which has a bucket of its own.
    client_key, reader_key = "compat-key-client", "compat-key-reader"
    keys = SecretStr(f"{client_key},{reader_key}")
    app = create_app(settings.model_copy(update={"rate_limit": 0.2, "api_keys": keys}), retriever=retriever)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with LiveServer(app) as live:

        def spend_the_burst() -> None:
            for _ in range(3):
                answer = httpx.get(f"{live.url}/v1/models", headers={"Authorization": f"Bearer {client_key}"})
                if answer.status_code == 429:
                    return
            raise AssertionError("a rate of one request per 5 s allowed 3 at once")

        spend_the_burst()
        impatient = openai.OpenAI(base_url=f"{live.url}/v1", api_key=client_key, max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            impatient.chat.completions.create(model="archive", messages=messages)
        refused = caught.value
        assert refused.status_code == 429 and refused.code == "rate_limited"  # read from our error shape
        assert "rate limit" in refused.message and int(refused.response.headers["Retry-After"]) >= 1

        spend_the_burst()
        patient = openai.OpenAI(base_url=f"{live.url}/v1", api_key=client_key, max_retries=2, timeout=60)
        completion = patient.chat.completions.create(model="archive", messages=messages)
        assert "April 2021" in (completion.choices[0].message.content or "")
        metrics = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {reader_key}"}).text
        refusals = 'rag_http_requests_total{method="POST",route="/v1/chat/completions",status="429"} 2.0'
        assert refusals in metrics  # the patient client was refused once too, and waited it out
