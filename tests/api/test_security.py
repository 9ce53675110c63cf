"""API keys, the key-only mechanism for state changes, CORS and the bind refusal (api/security.py,
`rag serve`): against a real server on 127.0.0.1 configured with two keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from api.main import create_app
from api.security import KeyRequired, KeyRing, is_loopback
from rag.cli import app as cli
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer, free_port

KEYS = "key-a-0123456789,key-b-9876543210"
KEY_A, KEY_B = KEYS.split(",")
SEARCH = {"query": "pay progression", "k": 2}


ID_SECRET = "a-server-secret-for-key-ids"


def keyed(settings: Settings, **extra: object) -> Settings:
    update = {"api_keys": SecretStr(KEYS), "key_id_secret": SecretStr(ID_SECRET), **extra}
    return settings.model_copy(update=update)


def hmac_id(key: str, secret: str = ID_SECRET) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:8]


@pytest.fixture(scope="module")
def keyed_server(settings: Settings, retriever: Retriever) -> Iterator[LiveServer]:
    with LiveServer(create_app(keyed(settings), retriever=retriever)) as live:
        yield live


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/search", SEARCH),
        ("GET", "/v1/documents", None),
        ("POST", "/v1/cite", {"text": "pay progression"}),
        ("GET", "/v1/models", None),
        ("GET", "/metrics", None),
    ],
)
def test_keys_no_key_401_wrong_key_401_either_key_200(
    keyed_server: LiveServer, method: str, path: str, body: object
) -> None:
    url = keyed_server.url + path
    for headers in ({}, bearer("key-c-wrong"), {"Authorization": KEY_A}, bearer(KEY_A + "x")):
        r = httpx.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"
        assert set(r.json()["error"]) == {"code", "message"}
    for key in (KEY_A, KEY_B):
        assert httpx.request(method, url, json=body, headers=bearer(key)).status_code == 200


def test_keys_401_says_whether_the_key_was_missing_or_wrong(keyed_server: LiveServer) -> None:
    missing = httpx.post(f"{keyed_server.url}/v1/search", json=SEARCH).json()["error"]["message"]
    wrong = httpx.post(f"{keyed_server.url}/v1/search", json=SEARCH, headers=bearer("nope")).json()
    assert "Authorization: Bearer" in missing
    assert wrong["error"]["message"] == "the API key sent is not valid"


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/", "/static/app.js", "/static/app.css", "/docs", "/openapi.json"]
)
def test_keys_leave_health_the_page_and_the_docs_open(keyed_server: LiveServer, path: str) -> None:
    assert httpx.get(keyed_server.url + path).status_code == 200


def test_keys_are_never_logged_only_an_hmac_under_the_server_secret(keyed_server: LiveServer) -> None:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Only this test's searches: the fixture's last /readyz poll is logged just after its
            # response went out, so its line may arrive after this handler is attached.
            if json.loads(record.getMessage())["route"] == "/v1/search":
                lines.append(record.getMessage())

    handler = Keep()
    logging.getLogger("rag.requests").addHandler(handler)
    try:
        httpx.post(f"{keyed_server.url}/v1/search", json=SEARCH, headers=bearer(KEY_A))
        httpx.post(f"{keyed_server.url}/v1/search", json=SEARCH, headers=bearer("a-wrong-key"))
        deadline = time.monotonic() + 10  # each line is written just after its response went out
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        logging.getLogger("rag.requests").removeHandler(handler)
    assert len(lines) == 2
    assert not any(KEY_A in line or "a-wrong-key" in line for line in lines)
    assert [json.loads(line)["key"] for line in lines] == [hmac_id(KEY_A), None]
    assert hmac_id(KEY_A) != hashlib.sha256(KEY_A.encode()).hexdigest()[:8]  # not a plain hash


def test_key_ids_depend_on_the_secret_which_is_random_unless_set(settings: Settings) -> None:
    """Two servers started without RAG_KEY_ID_SECRET name the same key differently, so an id in a
    log cannot be checked against guessed keys; with the secret set, ids are stable across starts."""
    assert KeyRing.from_settings(keyed(settings)).key_id(KEY_A) == hmac_id(KEY_A)
    unset = settings.model_copy(update={"api_keys": SecretStr(KEYS)})
    first, second = KeyRing.from_settings(unset), KeyRing.from_settings(unset)
    assert first.key_id(KEY_A) != second.key_id(KEY_A)
    assert first.identify(KEY_A) == first.key_id(KEY_A) and first.identify("nope") is None


def test_keyring_reads_the_setting_and_the_file(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "keys"
    path.write_text("# operators\nfile-key-1\n\n  file-key-2  \n", encoding="utf-8")
    ring = KeyRing.from_settings(
        settings.model_copy(update={"api_keys": SecretStr(" x1 , x2,"), "api_keys_file": path})
    )
    assert len(ring) == 4
    for key in ("x1", "x2", "file-key-1", "file-key-2"):
        assert ring.identify(key) == ring.key_id(key)
    assert ring.identify("# operators") is None and ring.identify("") is None
    assert not KeyRing.from_settings(settings)


def test_keys_file_that_does_not_exist_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RAG_API_KEYS_FILE"):
        Settings(data_dir=tmp_path, api_keys_file=tmp_path / "missing", _env_file=None)  # type: ignore[call-arg]


def _with_write_route(settings: Settings, retriever: Retriever) -> TestClient:
    app = create_app(settings, retriever=retriever)

    def reload() -> dict[str, str]:
        return {"status": "reloaded"}

    app.add_api_route("/v1/reload", reload, methods=["POST"], dependencies=[KeyRequired])
    return TestClient(app)


def test_state_changing_route_needs_a_key_even_when_reads_are_open(
    settings: Settings, retriever: Retriever
) -> None:
    with _with_write_route(settings, retriever) as client:
        assert client.post("/v1/search", json=SEARCH).status_code == 200  # reads: open
        r = client.post("/v1/reload")
        assert r.status_code == 401 and "RAG_API_KEYS" in r.json()["error"]["message"]
        assert r.headers["WWW-Authenticate"] == "Bearer"
    with _with_write_route(keyed(settings), retriever) as client:
        assert client.post("/v1/reload").status_code == 401
        assert client.post("/v1/reload", headers=bearer(KEY_B)).json() == {"status": "reloaded"}


def test_cors_is_closed_by_default(settings: Settings, retriever: Retriever) -> None:
    with TestClient(create_app(settings, retriever=retriever)) as client:
        origin = {"Origin": "https://elsewhere.example"}
        assert (
            "access-control-allow-origin"
            not in client.post("/v1/search", json=SEARCH, headers=origin).headers
        )
        preflight = {**origin, "Access-Control-Request-Method": "POST"}
        assert "access-control-allow-origin" not in client.options("/v1/search", headers=preflight).headers


def test_cors_allows_the_configured_origins_with_keys_on(settings: Settings, retriever: Retriever) -> None:
    allowed = "https://ui.example"
    with TestClient(
        create_app(keyed(settings, cors_origins=f"{allowed}, https://b.example"), retriever=retriever)
    ) as c:
        preflight = {
            "Origin": allowed,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        r = c.options("/v1/search", headers=preflight)  # a preflight carries no key, and needs none
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        r = c.post("/v1/search", json=SEARCH, headers={"Origin": allowed, **bearer(KEY_A)})
        assert r.headers["access-control-allow-origin"] == allowed
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        r = c.post("/v1/search", json=SEARCH, headers={"Origin": "https://other.example", **bearer(KEY_A)})
        assert "access-control-allow-origin" not in r.headers


runner = CliRunner()


def test_cli_url_mode_sends_rag_api_key(env: dict[str, str], keyed_server: LiveServer) -> None:
    args = ["documents", "--json", "--url", keyed_server.url]
    refused = runner.invoke(cli, args, env=env)
    assert refused.exit_code == 1 and "RAG_API_KEY" in refused.output and "401" in refused.output
    answered = runner.invoke(cli, args, env={**env, "RAG_API_KEY": KEY_B})
    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.stdout)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_serve_refuses_a_public_address_without_keys(env: dict[str, str], host: str) -> None:
    result = runner.invoke(cli, ["serve", "--host", host], env=env)
    assert result.exit_code == 2
    assert "refusing to serve" in result.output and "--allow-unauthenticated" in result.output


def test_loopback_addresses_are_recognised() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))


def test_serve_binds_a_public_address_when_told_explicitly(env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rag.cli.main", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={**os.environ, **env, "RAG_ALLOW_UNAUTHENTICATED": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None, "rag serve exited"
                time.sleep(0.2)
        else:
            pytest.fail("rag serve --host 0.0.0.0 with RAG_ALLOW_UNAUTHENTICATED never answered")
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("given", ["proxy.internal", "10.0.0.1/33", "10.0.0.1, 300.1.1.1"])
def test_serve_refuses_trusted_proxies_that_are_not_addresses(env: dict[str, str], given: str) -> None:
    # uvicorn would take such an entry as a name no peer ever has, and trust nobody without a word
    result = runner.invoke(cli, ["serve", "--trusted-proxies", given], env=env)
    assert result.exit_code == 2
    assert "RAG_TRUSTED_PROXIES" in result.output and "is not an IP address" in result.output


def test_trusted_proxies_are_written_canonically(settings: Settings) -> None:
    given = Settings(
        data_dir=settings.data_dir, trusted_proxies=" 10.1.2.3/8, ::1,, 127.0.0.1 ", _env_file=None
    )  # type: ignore[call-arg]
    assert given.trusted_proxies == "10.0.0.0/8,::1,127.0.0.1"
    assert Settings(data_dir=settings.data_dir, _env_file=None).trusted_proxies is None  # type: ignore[call-arg]
