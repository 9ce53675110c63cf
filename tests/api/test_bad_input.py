"""The README's table of bad input, row by row: each kind of bad request and the status and error code
it gets, sent to a real uvicorn server on 127.0.0.1. The rows live here once; a test checks that the
README's table lists exactly these rows, so the table cannot drift from what the server does."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from api.main import create_app
from rag.ingest.index import Index
from rag.settings import Settings
from tests.conftest import StartedServer, writable

README = Path(__file__).resolve().parents[2] / "README.md"
JSON = {"content-type": "application/json"}
LIMIT = 2 * 1024 * 1024


def _oversized_chunks() -> Iterator[bytes]:  # a generator body is sent chunked, with no Content-Length
    for _ in range(LIMIT // 65536 + 2):
        yield b"x" * 65536


@dataclass(frozen=True)
class Row:
    kind: str  # the README's first column
    example: str  # the README's second column
    status: int
    code: str
    method: str = "POST"
    path: str = "/v1/search"
    body: Any = None  # sent as JSON, unless `raw` is set
    raw: bytes | None = None
    chunked: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    server: str = "ready"  # or "loading" (its index not loaded yet), or "unavailable" (failed to load)

    def send(self, client: httpx.Client) -> httpx.Response:
        if self.chunked:
            return client.request(self.method, self.path, content=_oversized_chunks(), headers=JSON)
        if self.raw is not None:
            return client.request(self.method, self.path, content=self.raw, headers=JSON | self.headers)
        if self.body is None:
            return client.request(self.method, self.path, headers=self.headers)
        return client.request(self.method, self.path, json=self.body, headers=self.headers)


ROWS = [
    Row("empty query", '`{"query": ""}`', 422, "invalid_request", body={"query": ""}),
    Row("blank query", '`{"query": "   "}`', 422, "invalid_request", body={"query": "   "}),
    Row(
        "wordless query (no letter or digit)",
        '`{"query": "?!…"}`',
        422,
        "invalid_request",
        body={"query": "?!…"},
    ),
    Row(
        "over-long query (over `RAG_MAX_QUERY_CHARS`)",
        '`{"query": "pay pay …"}` (4,001 characters)',
        422,
        "invalid_request",
        body={"query": ("pay " * 1001)[:4001]},
    ),
    Row(
        "invalid Unicode (an unpaired surrogate)",
        '`{"query": "pay \\ud800"}`',
        422,
        "invalid_request",
        raw=b'{"query": "pay \\ud800"}',
    ),
    Row(
        "`k` out of range",
        '`{"query": "pay", "k": 51}`',
        422,
        "invalid_request",
        body={"query": "pay", "k": 51},
    ),
    Row(
        "unknown field",
        '`{"query": "pay", "top_k": 3}`',
        422,
        "invalid_request",
        body={"query": "pay", "top_k": 3},
    ),
    Row(
        "unknown filter",
        '`{"query": "pay", "filters": {"author": "x"}}`',
        422,
        "invalid_request",
        body={"query": "pay", "filters": {"author": "x"}},
    ),
    Row(
        "wrong type (never coerced)",
        '`{"query": "pay", "k": "5"}`',
        422,
        "invalid_request",
        body={"query": "pay", "k": "5"},
    ),
    Row(
        "`k` not a whole number",
        '`{"query": "pay", "k": 4.5}`',
        422,
        "invalid_request",
        body={"query": "pay", "k": 4.5},
    ),
    Row("a JSON value that is not an object", '`["pay"]`', 422, "invalid_request", body=["pay"]),
    Row("malformed JSON", '`{"query": }`', 422, "invalid_request", raw=b'{"query": }'),
    Row("no body", "`POST /v1/search` with no body", 422, "invalid_request"),
    Row(
        "body not UTF-8",
        '`{"query": "\\xff\\xfe"}` as raw bytes',
        400,
        "bad_request",
        raw=b'{"query": "\xff\xfe"}',
    ),
    Row(
        "body in UTF-16 or UTF-32 (with a byte-order mark or without)",
        '`{"query": "pay"}` in UTF-16, with its byte-order mark',
        400,
        "bad_request",
        raw='\ufeff{"query": "pay"}'.encode("utf-16-le"),
    ),
    Row(
        "too many queries in a batch",
        "`POST /v1/search/batch` with 101 queries",
        422,
        "invalid_request",
        path="/v1/search/batch",
        body={"queries": [{"query": "pay"}] * 101},
    ),
    Row(
        "no quotes in a cite batch",
        '`POST /v1/cite/batch {"requests": []}`',
        422,
        "invalid_request",
        path="/v1/cite/batch",
        body={"requests": []},
    ),
    Row(
        "too many quotes in a cite batch",
        "`POST /v1/cite/batch` with 101 quotes",
        422,
        "invalid_request",
        path="/v1/cite/batch",
        body={"requests": [{"text": "pay"}] * 101},
    ),
    Row(
        "a bad quote in a cite batch (the message names it; the whole batch is refused)",
        '`POST /v1/cite/batch {"requests": [{"text": "pay"}, {"text": " "}]}`',
        422,
        "invalid_request",
        path="/v1/cite/batch",
        body={"requests": [{"text": "pay"}, {"text": " "}]},
    ),
    Row(
        "unknown backend",
        '`POST /v1/ask {"question": "pay?", "backend": "nope"}`',
        400,
        "unknown_backend",
        path="/v1/ask",
        body={"question": "pay?", "backend": "nope"},
    ),
    Row(
        "unknown backend option",
        '`POST /v1/ask {"question": "pay?", "options": {"path": "/etc/passwd"}}`',
        422,
        "invalid_request",
        path="/v1/ask",
        body={"question": "pay?", "options": {"path": "/etc/passwd"}},
    ),
    Row(
        "empty quote to cite",
        '`POST /v1/cite {"text": ""}`',
        422,
        "invalid_request",
        path="/v1/cite",
        body={"text": ""},
    ),
    Row(
        "chat without a user question",
        '`POST /v1/chat/completions {"messages": [{"role": "system", "content": "hi"}]}`',
        422,
        "invalid_request",
        path="/v1/chat/completions",
        body={"messages": [{"role": "system", "content": "hi"}]},
    ),
    Row(
        "chat message with an unknown role",
        '`POST /v1/chat/completions {"messages": [{"role": "", "content": "pay?"}]}`',
        422,
        "invalid_request",
        path="/v1/chat/completions",
        body={"messages": [{"role": "", "content": "pay?"}]},
    ),
    Row(
        "unknown passage id",
        "`GET /v1/passages/nope`",
        404,
        "not_found",
        method="GET",
        path="/v1/passages/nope",
    ),
    Row(
        "unknown passage id of 10,000 characters (the message quotes its first 64)",
        "`GET /v1/passages/xxx…` (10,000 characters)",
        404,
        "not_found",
        method="GET",
        path="/v1/passages/" + "x" * 10_000,
    ),
    Row(
        "unknown document id",
        "`GET /v1/documents/nope`",
        404,
        "not_found",
        method="GET",
        path="/v1/documents/nope",
    ),
    Row("unknown endpoint", "`GET /v1/nope`", 404, "not_found", method="GET", path="/v1/nope"),
    Row(
        "wrong method (the answer carries `Allow`)",
        "`DELETE /v1/search`",
        405,
        "method_not_allowed",
        method="DELETE",
    ),
    Row(
        "body over 2 MB",
        "2 MB and one byte, with a `Content-Length`",
        413,
        "too_large",
        raw=b"x" * (LIMIT + 1),
    ),
    Row("body over 2 MB, chunked", "over 2 MB, chunked, with no length", 413, "too_large", chunked=True),
    Row(
        "index still loading",
        '`{"query": "pay"}` before `/readyz` answers 200',
        503,
        "index_not_built",
        body={"query": "pay"},
        server="loading",
    ),
    Row(
        "index not available (corrupt with `RAG_ON_STALE=refuse`, unreadable, disk full)",
        '`{"query": "pay"}`; the message says what failed, without the server\'s paths',
        503,
        "index_unavailable",
        body={"query": "pay"},
        server="unavailable",
    ),
]


@pytest.fixture(scope="module")
def loading_client(settings: Settings) -> Iterator[httpx.Client]:
    """The app as it is between startup and a loaded index: outside `with`, TestClient runs no lifespan."""
    yield TestClient(create_app(settings))


@pytest.fixture(scope="module")
def unavailable_client(
    settings: Settings, index: Index, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A real server over a copy of the index with its vectors damaged, set to refuse, not rebuild."""
    copy = tmp_path_factory.mktemp("corrupt-index")
    shutil.copytree(settings.index_dir, copy, symlinks=True, dirs_exist_ok=True)
    vectors_file = (copy / "current" / "chunks.npy").resolve()
    writable(vectors_file).write_bytes(vectors_file.read_bytes()[:-64])
    broken = settings.model_copy(update={"index_dir": copy, "on_stale": "refuse"})
    with StartedServer(create_app(broken)) as live, httpx.Client(base_url=live.url, timeout=60) as c:
        live.wait_until(lambda: c.get("/readyz").json()["status"] == "error")
        yield c


@pytest.mark.parametrize("row", [r for r in ROWS if r.server == "ready"], ids=lambda r: r.kind)
def test_bad_input_gets_the_status_and_code_the_readme_lists(client: httpx.Client, row: Row) -> None:
    r = row.send(client)
    assert (r.status_code, r.json()["error"]["code"]) == (row.status, row.code), r.text
    assert r.json()["error"]["message"]
    if row.status == 405:
        assert r.headers["allow"] == "POST"
    assert client.get("/healthz").status_code == 200  # and the server keeps answering


def test_a_request_before_the_index_loads_gets_503_and_the_readme_code(loading_client: httpx.Client) -> None:
    for row in (r for r in ROWS if r.server == "loading"):
        r = row.send(loading_client)
        assert (r.status_code, r.json()["error"]["code"]) == (row.status, row.code), r.text
        assert "/readyz" in r.json()["error"]["message"]


def test_a_request_to_a_server_without_an_index_gets_503_without_paths(
    unavailable_client: httpx.Client, settings: Settings
) -> None:
    for row in (r for r in ROWS if r.server == "unavailable"):
        r = row.send(unavailable_client)
        assert (r.status_code, r.json()["error"]["code"]) == (row.status, row.code), r.text
        message = r.json()["error"]["message"]
        assert "stale or corrupt" in message and "rag ingest" in message
        assert "/" not in message, message
    ready = unavailable_client.get("/readyz")
    assert ready.status_code == 503
    assert {k: ready.json()[k] for k in ("status", "detail")} == {"status": "error", "detail": message}


def _readme_rows() -> list[tuple[str, str, int, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- bad input table -->")[1]
    rows = []
    for line in section.strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if cells[0] in ("bad input", "---"):
            continue
        rows.append((cells[0], cells[1], int(cells[2]), cells[3].strip("`")))
    return rows


def test_readme_bad_input_table_lists_exactly_these_rows() -> None:
    assert _readme_rows() == [(r.kind, r.example, r.status, r.code) for r in ROWS]
