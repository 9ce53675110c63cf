"""Bad input found by probing the live server from outside: each gets a 4xx that says what is wrong,
never a 500, and the server keeps answering. Against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from rag.answer.rewrite import BORROW, rewrite_query

JSON = {"content-type": "application/json"}
SURROGATE = '"It is too early \\ud800"'  # a JSON escape that decodes to an unpaired surrogate
SYSTEM_THEN_USER = f'[{{"role": "system", "content": {SURROGATE}}}, {{"role": "user", "content": "hi"}}]'


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/search", f'{{"query": {SURROGATE}}}', "query"),
        ("/v1/cite", f'{{"text": {SURROGATE}}}', "text holds an unpaired surrogate (\\ud800"),
        ("/v1/ask", f'{{"question": {SURROGATE}}}', "question"),
        ("/v1/ask", f'{{"question": "what about that?", "history": [{SURROGATE}]}}', "history[0] holds"),
        (
            "/v1/chat/completions",
            f'{{"messages": [{{"role": "user", "content": {SURROGATE}}}]}}',
            "surrogate",
        ),
        (
            "/v1/chat/completions",
            f'{{"messages": {SYSTEM_THEN_USER}}}',
            "messages[0].content holds an unpaired surrogate",
        ),
    ],
)
def test_unpaired_surrogates_are_422_not_500(client: httpx.Client, path: str, body: str, needle: str) -> None:
    r = client.post(path, content=body.encode(), headers=JSON)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200  # and the connection is still good


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x01\x02\x03", "\u0000", "?!...", "—"])
@pytest.mark.parametrize(
    ("path", "field"), [("/v1/search", "query"), ("/v1/cite", "text"), ("/v1/ask", "question")]
)
def test_text_without_letters_or_digits_is_refused(
    client: httpx.Client, path: str, field: str, text: str
) -> None:
    r = client.post(path, json={field: text})
    assert r.status_code == 422
    assert r.json()["error"]["message"] in (f"{field} has no letters or digits", f"{field} is empty")


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/search", {"query": "pay", "k": "5"}, "k"),
        ("/v1/search", {"query": "pay", "k": True}, "k"),
        ("/v1/search", {"query": "pay", "k": 5.5}, "k"),
        ("/v1/cite", {"text": "pay", "k": "3"}, "k"),
        ("/v1/ask", {"question": "pay?", "stream": "yes"}, "stream"),
        ("/v1/ask", {"question": "pay?", "stream": 1}, "stream"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "pay?"}], "k": "3"}, "k"),
    ],
)
def test_wrong_types_are_refused_not_coerced(
    client: httpx.Client, path: str, body: dict, needle: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith(needle)


def test_a_whole_number_written_with_a_decimal_point_is_that_integer(client: httpx.Client) -> None:
    """JSON has one kind of number and JSON Schema's `integer` includes 4.0, so the server takes it
    as the schema says it may be sent: k 4.0 is k 4 (a string or a fraction is still refused)."""
    r = client.post("/v1/search", content=b'{"query": "pay progression", "k": 4.0}', headers=JSON)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 4


def test_a_long_unknown_id_or_path_is_echoed_cut_short(client: httpx.Client) -> None:
    long_id = "x" * 10_000
    for path, kind in [(f"/v1/passages/{long_id}", "passage"), (f"/v1/documents/{long_id}", "document")]:
        r = client.get(path)
        assert r.status_code == 404
        message = r.json()["error"]["message"]
        assert f"no {kind} with id '{'x' * 64}…'" in message and len(message) < 1000, message
    r = client.get(f"/v1/{long_id}")
    assert (
        r.status_code == 404
        and r.json()["error"]["message"] == f"no such endpoint: GET /v1/{'x' * 60}… (see /docs)"
    )
    r = client.post("/v1/search", json={"query": "pay", long_id: 1})
    assert r.status_code == 422 and r.json()["error"]["message"] == f"{'x' * 64}…: unknown field"
    r = client.post("/v1/ask", json={"question": "pay?", "backend": long_id})
    assert r.status_code == 400 and len(r.json()["error"]["message"]) < 1000


@pytest.mark.parametrize(
    "body",
    [
        "\ufeff" + '{"query": "pay"}',  # UTF-16 with its byte-order mark, as Windows tools write it
        '{"query": "pay"}',
    ],
    ids=["utf-16-with-bom", "utf-16-without-bom"],
)
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_body_in_utf_16_or_32_is_refused_with_400(client: httpx.Client, body: str, encoding: str) -> None:
    r = client.post("/v1/search", content=body.encode(encoding), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request" and "UTF-8" in r.json()["error"]["message"]


def test_a_utf_8_body_with_a_byte_order_mark_is_still_utf_8(client: httpx.Client) -> None:
    r = client.post("/v1/search", content='\ufeff{"query": "pay"}'.encode(), headers=JSON)
    assert r.status_code == 200, r.text


def test_a_request_cannot_choose_the_local_model_file(client: httpx.Client) -> None:
    r = client.post(
        "/v1/ask", json={"question": "Who runs MTC?", "backend": "local", "options": {"path": "/etc/passwd"}}
    )
    assert r.status_code == 422
    assert "path: unknown option" in r.json()["error"]["message"]


def test_malformed_bodies_say_what_is_wrong(client: httpx.Client) -> None:
    r = client.post("/v1/search", content=b'{"query": }', headers=JSON)
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "body is not valid JSON: Expecting value at character 10"
    r = client.post("/v1/search", content=b'{"query": "\xff\xfe pay"}', headers=JSON)
    assert r.status_code == 400
    assert "UTF-8" in r.json()["error"]["message"]


def test_unknown_routes_and_methods_name_themselves(client: httpx.Client) -> None:
    r = client.get("/v1/passages/a/b")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": "no such endpoint: GET /v1/passages/a/b (see /docs)",
    }
    r = client.delete("/v1/search")
    assert r.status_code == 405
    assert r.json()["error"]["message"] == "DELETE is not allowed on /v1/search"


def test_probes_answer_head_requests(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/"):
        assert client.head(path).status_code == 200, path


def test_chat_content_parts_without_text_are_not_the_question(client: httpx.Client) -> None:
    parts = [{"type": "text", "text": None}, {"type": "text", "text": {"a": "MTC"}}]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": parts}]})
    assert r.status_code == 422
    assert "there is none" in r.json()["error"]["message"]


def test_a_long_earlier_turn_lends_a_follow_up_only_a_few_words(client: httpx.Client) -> None:
    pasted = " ".join(f"word{n}" for n in range(50_000))
    assert len(rewrite_query("and what about that?", [pasted]).split()) <= BORROW + 5
    r = client.post("/v1/ask", json={"question": "and what about that?", "history": [pasted]})
    assert r.status_code == 200
    assert len(r.json()["query"]) < 200
