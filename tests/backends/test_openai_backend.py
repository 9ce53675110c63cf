"""rag/backends/openai.py against a real HTTP server on loopback that speaks chat completions.

The fake server picks its behaviour from the requested model name: a normal streamed or plain
answer, 500s, a 503 or 429 that clears on retry, a reply slower than the timeout, a stream that
stalls, and malformed output. Nothing is mocked: requests cross a real socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import SecretStr

from rag.answer.answering import Answerer
from rag.answer.prompting import Source, build_prompt
from rag.backends.openai import OpenAIBackend
from rag.errors import BackendError, InvalidRequestError
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer, free_port
from tests.standin import StandIn

PIECES = ["The answer is ", "April 2021", " [1]."]
QUESTION = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return f"data: {json.dumps(data)}\n\n"


def fake_llm() -> FastAPI:
    app = FastAPI()
    calls: Counter[str] = Counter()
    seen: list[dict[str, Any]] = []
    app.state.calls, app.state.seen = calls, seen

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body["model"]
        calls[model] += 1
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if model == "fail500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if model == "flaky" and calls[model] == 1:
            return JSONResponse({"error": {"message": "busy"}}, status_code=503)
        if model == "ratelimit" and calls[model] == 1:
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "0"})
        if model == "unauthorised":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        if model == "slow":
            await asyncio.sleep(3)
        if model == "garbage":
            return PlainTextResponse("<html>not an API</html>")
        if model == "nochoices":
            return JSONResponse({"object": "chat.completion", "choices": [{"index": 0}]})
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(PIECES)}
            return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}

        async def events() -> AsyncIterator[str]:
            yield _chunk({"role": "assistant", "content": ""})
            for piece in PIECES:
                if model == "malformed" and piece == PIECES[1]:
                    yield "data: {not json\n\n"
                if model == "stall" and piece == PIECES[1]:
                    await asyncio.sleep(3)
                yield _chunk({"content": piece})
            if model == "truncated":
                return
            yield _chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def fake() -> Iterator[LiveServer]:
    with LiveServer(fake_llm()) as live:
        yield live


# The fake's behaviours are model names, so the operator's list offers them all.
BEHAVIOURS = "streamer plain ok flaky ratelimit fail500 unauthorised slow stall malformed truncated garbage"
MODELS = ",".join([*BEHAVIOURS.split(), "nochoices"])


def make_settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_base_url": url,
        "llm_timeout": 1.0,
        "llm_retries": 2,
        "openai_models": MODELS,
        **extra,
    }
    return Settings(data_dir=tmp_path, _env_file=None, **values)  # type: ignore[call-arg]


def run(settings: Settings, **options: Any) -> list[str]:
    backend = OpenAIBackend.create(settings, options)
    sources = [Source(1, _passage())]
    return list(backend.generate(build_prompt("When?", sources), sources))


def _passage() -> Any:
    from tests.answer.test_answering import chunk

    return chunk("HMIP will quality assure SFO reviews from April 2021.", 1)


def test_openai_backend_streams_deltas(fake: LiveServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"{fake.url}/v1", openai_api_key="sk-test", openai_model="streamer")
    assert run(settings) == PIECES
    request = fake.server.config.app.state.seen[-1]
    assert request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["stream"] is True and body["model"] == "streamer"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "<passages>" in body["messages"][1]["content"]


def test_openai_backend_plain_completion(fake: LiveServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"{fake.url}/v1")
    assert run(settings, model="plain", stream=False) == ["".join(PIECES)]
    assert fake.server.config.app.state.seen[-1]["auth"] is None  # no key, no header


@pytest.mark.parametrize("llm", ["flaky", "ratelimit"])
def test_openai_backend_retries_429_and_5xx(fake: LiveServer, tmp_path: Path, llm: str) -> None:
    assert run(make_settings(tmp_path, f"{fake.url}/v1"), model=llm) == PIECES
    assert fake.server.config.app.state.calls[llm] == 2


def test_openai_backend_500_fails_after_retries(fake: LiveServer, tmp_path: Path) -> None:
    calls = fake.server.config.app.state.calls
    before = calls["fail500"]
    with pytest.raises(BackendError, match="answered 500 after 3 attempts"):
        run(make_settings(tmp_path, f"{fake.url}/v1", llm_timeout=5.0), model="fail500")
    assert calls["fail500"] - before == 3


def test_openai_backend_401_is_not_retried(fake: LiveServer, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="401.*RAG_OPENAI_API_KEY"):
        run(make_settings(tmp_path, f"{fake.url}/v1"), model="unauthorised")
    assert fake.server.config.app.state.calls["unauthorised"] == 1


@pytest.mark.parametrize("llm", ["slow", "stall"])
def test_openai_backend_timeout_raises_within_deadline(fake: LiveServer, tmp_path: Path, llm: str) -> None:
    started = time.monotonic()
    with pytest.raises(BackendError, match="timed out after 1s"):
        run(make_settings(tmp_path, f"{fake.url}/v1", llm_timeout=1.0), model=llm)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("llm", "stream", "message"),
    [
        ("malformed", True, "not JSON"),
        ("truncated", True, "without \\[DONE\\]"),
        ("garbage", True, "expected an event stream"),
        ("garbage", False, "not JSON"),
        ("nochoices", False, "no choices"),
    ],
)
def test_openai_backend_malformed_output(
    fake: LiveServer, tmp_path: Path, llm: str, stream: bool, message: str
) -> None:
    with pytest.raises(BackendError, match=f"malformed output.*{message}"):
        run(make_settings(tmp_path, f"{fake.url}/v1"), model=llm, stream=stream)


def test_openai_backend_refused_connection(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="could not connect"):
        run(make_settings(tmp_path, f"http://127.0.0.1:{free_port()}/v1"))


def test_openai_backend_options_are_strict(tmp_path: Path) -> None:
    from rag.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="temprature: unknown option"):
        OpenAIBackend.create(make_settings(tmp_path, "http://127.0.0.1:1/v1"), {"temprature": 1})


@pytest.mark.parametrize("llm", ["fail500", "slow", "malformed", "refused"])
def test_ask_openai_failure_falls_back_over_http(
    fake: LiveServer, tmp_path: Path, retriever: Retriever, settings: Settings, llm: str
) -> None:
    from api.main import create_app

    url = f"http://127.0.0.1:{free_port()}/v1" if llm == "refused" else f"{fake.url}/v1"
    update = {"openai_base_url": url, "llm_timeout": 1.0, "llm_retries": 1}
    served = settings.model_copy(update={**update, "openai_models": f"{MODELS},refused"})
    with LiveServer(create_app(served, retriever=retriever)) as api:
        body = {"question": QUESTION, "backend": "openai", "options": {"model": llm}}
        started = time.monotonic()
        plain = httpx.post(f"{api.url}/v1/ask", json=body, timeout=30)
        assert time.monotonic() - started < 10
        assert plain.status_code == 200
        data = plain.json()
        assert data["backend"] == "extractive" and "April 2021" in data["answer"]
        assert len(data["warnings"]) == 1 and "openai backend failed" in data["warnings"][0]
        with httpx.stream("POST", f"{api.url}/v1/ask", json={**body, "stream": True}, timeout=30) as resp:
            assert resp.status_code == 200
            events = [line for line in resp.iter_lines() if line.startswith("event:")]
        assert events[-1] == "event: done" and events.count("event: done") == 1


def test_answerer_with_openai_backend_cites_passages(
    fake: LiveServer, tmp_path: Path, retriever: Retriever
) -> None:
    settings = make_settings(tmp_path, f"{fake.url}/v1")
    answer = Answerer(OpenAIBackend.create(settings, {"model": "ok"}), retriever).answer(QUESTION)
    assert answer.backend == "openai" and answer.text == "The answer is April 2021 [1]."
    assert len(answer.citations) == 1 and not answer.warnings


def test_openai_backend_trickling_upstream_is_cut_at_the_deadline(
    tmp_path: Path, retriever: Retriever
) -> None:
    # A header byte every 0.3s never trips a read timeout: only a deadline on the whole call stops it.
    with StandIn("trickle", interval=0.3) as llm:
        settings = make_settings(tmp_path, llm.url, llm_timeout=2.0, llm_retries=0)
        started = time.monotonic()
        with pytest.raises(BackendError, match="timed out after 2s"):
            run(settings)
        assert time.monotonic() - started < 5
        assert wait_closed(llm, 1)

        backend = OpenAIBackend.create(settings)
        answer = Answerer(backend, retriever).answer(QUESTION)
        assert answer.backend == "extractive" and "April 2021" in answer.text
        assert "openai backend failed (timed out after 2s" in answer.warnings[0]


def test_openai_backend_cancel_closes_the_upstream_connection(tmp_path: Path) -> None:
    import threading

    with StandIn("hang") as llm:
        backend = OpenAIBackend.create(make_settings(tmp_path, llm.url, llm_timeout=60.0, llm_retries=0))
        failure: list[BaseException] = []

        def call() -> None:
            sources = [Source(1, _passage())]
            try:
                list(backend.generate(build_prompt("When?", sources), sources))
            except BackendError as exc:
                failure.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        deadline = time.monotonic() + 10
        while llm.opened == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        backend.cancel()
        worker.join(timeout=5)
        assert not worker.is_alive() and "cancelled" in str(failure[0])
        assert wait_closed(llm, 1)


def wait_closed(llm: StandIn, count: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while llm.closed < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return llm.closed >= count


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tokens": 2000}, "options.max_tokens: 2000 is over the limit of 1024 (RAG_MAX_TOKENS)"),
        ({"model": "gpt-4.5-expensive"}, "options.model: 'gpt-4.5-expensive' is not offered; choose one of"),
    ],
)
def test_ask_openai_options_beyond_the_operators_limits_get_422(
    client: httpx.Client, options: dict[str, Any], message: str
) -> None:
    response = client.post("/v1/ask", json={"question": QUESTION, "backend": "openai", "options": options})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert message in response.json()["error"]["message"]


def test_openai_backend_options_within_the_operators_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:1/v1", max_tokens=300, openai_models="a, b")
    assert OpenAIBackend.create(settings, {"model": "b", "max_tokens": 300}).options.max_tokens == 300
    assert OpenAIBackend.create(settings, {"model": settings.openai_model}).options.max_tokens == 300
    for options in ({"model": "c"}, {"max_tokens": 301}):
        with pytest.raises(InvalidRequestError, match="RAG_OPENAI_MODELS|RAG_MAX_TOKENS"):
            OpenAIBackend.create(settings, options)


@pytest.mark.parametrize("llm", ["fail500", "garbage", "refused", "trickle"])
def test_ask_warnings_never_show_the_llm_address_or_key(
    fake: LiveServer,
    retriever: Retriever,
    settings: Settings,
    llm: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api.main import create_app

    with StandIn("trickle", interval=0.3) as trickle:
        urls = {"refused": f"http://127.0.0.1:{free_port()}/v1", "trickle": trickle.url}
        url = urls.get(llm, f"{fake.url}/v1")
        key = "sk-secret-4242"
        update = {"openai_base_url": url, "llm_timeout": 2.0, "llm_retries": 0, "openai_models": MODELS}
        served = settings.model_copy(update={**update, "openai_api_key": SecretStr(key)})
        with LiveServer(create_app(served, retriever=retriever)) as api:
            body = {"question": QUESTION, "backend": "openai", "options": {"model": llm}}
            if llm in ("refused", "trickle"):
                body["options"] = {}
            data = httpx.post(f"{api.url}/v1/ask", json=body, timeout=30).json()
    port = url.split(":")[2].split("/")[0]
    assert data["backend"] == "extractive" and "openai backend failed" in data["warnings"][0]
    shown = json.dumps(data["warnings"])
    assert "127.0.0.1" not in shown and port not in shown and key not in shown and "/v1" not in shown
    if llm != "garbage":  # the operator still gets the address, in the server log
        assert any(url.removesuffix("/v1") in record.getMessage() for record in caplog.records)
