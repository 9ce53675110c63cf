"""The chat page (api/routes/page.py, api/static/) in real headless Chromium against the live server:
loading offline, the passage panel (the cited span in its context, copying the citation), hostile
text, errors and the API-key prompt. The conversation itself is in test_page_conversation.py.

Questions go to the server's real /v1/ask, except where a test needs what no real question reliably
produces (a cited reply, hostile markup, an error, a cut-off stream): there the browser answers
/v1/ask via `page.route`, and everything else, /v1/passages included, is still the live server.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import date
from typing import Any

import httpx
import pytest
from playwright import sync_api
from pydantic import SecretStr

from api.main import create_app
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.browser import LAST_TURN, SETTLED, Tab, open_tab
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

ANSWERED = "From when will HM Inspectorate of Probation have a role in the independent quality assurance of Serious Further Offence reviews?"  # noqa: E501 - dev.jsonl d002
NODE_TEXT = "() => document.getElementById('passage-node-text').textContent.length > 0"


def where(c: dict[str, Any]) -> str:
    if c["kind"] == "reply":
        return f"reply {c['reply']} to comment {c['comment']}"
    return f"comment {c['comment']}" if c["kind"] == "comment" else "post"


def full_citation(c: dict[str, Any]) -> str:
    """What "Copy citation" must copy for a passage with citation `c`: every part of it."""
    day = date.fromisoformat(c["date"]) if c["date"] else None
    when = f"{day.day} {day:%B %Y}" if day else "undated"
    return f"“{c['title']}”, {when}, {where(c)}. Source: {c['source']}, characters {c['start']}–{c['end']}."


def test_page_loads_offline_with_no_external_requests(tab: Tab, server: LiveServer) -> None:
    page = tab.page
    assert page.title() == "Ask the probation blog archive"
    assert page.locator("#question").is_visible()
    # the stylesheet applied and the script ran (it wires the form), all from this origin
    assert page.evaluate("() => getComputedStyle(document.body).maxWidth") != "none"
    assert tab.requests, "the page made no requests at all"
    assert [u for u in tab.requests if not u.startswith(f"{server.url}/") and not u.startswith("data:")] == []
    response = httpx.get(f"{server.url}/")
    assert "default-src 'self'" in response.headers["content-security-policy"]


def test_page_static_serves_only_its_own_files(client: httpx.Client) -> None:
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fmain.py").status_code == 404
    assert client.get("/static/page.py").json()["error"]["code"] == "not_found"


def test_page_marker_opens_the_source_in_context_with_the_span_highlighted_and_copies_its_citation(
    browser: sync_api.Browser, server: LiveServer, client: httpx.Client
) -> None:
    grant = {"permissions": ["clipboard-read", "clipboard-write"]}
    with contextmanager(open_tab)(browser, server, viewport={"width": 1280, "height": 900}, **grant) as tab:
        page = tab.page
        turn = tab.ask(ANSWERED)
        answer = turn.locator(".answer").text_content() or ""
        links = turn.locator(".answer a.cite")
        assert links.count() >= 1, answer
        assert turn.get_attribute("data-state") == "done" and turn.locator(".verdict").is_hidden()

        # keyboard only: from New conversation, Tab reaches the first [n] link of the thread
        page.focus("#new-conversation")
        page.keyboard.press("Tab")
        first = page.evaluate("() => document.activeElement.dataset.id")
        assert first == links.first.get_attribute("data-id")
        page.keyboard.press("Enter")

        dialog = page.locator("#passage")
        dialog.wait_for(state="visible")
        expected = client.get(f"/v1/passages/{first}").json()
        citation = expected["citation"]
        assert page.text_content("#passage-title") == citation["title"]
        assert page.get_attribute("#passage-date", "datetime") == citation["date"]
        assert citation["date"][:4] in (page.text_content("#passage-date") or "")
        assert page.text_content("#passage-where") == where(citation)
        assert page.text_content("#passage-text") == expected["text"]  # literally, markup and all
        # the sentence the answer quotes from it is highlighted in the passage
        quoted = page.locator("#passage-text mark.quote").first.text_content() or ""
        assert quoted and " ".join(quoted.split()) in " ".join(answer.split())

        # the cited span, highlighted inside the whole comment or post it comes from
        toggle = page.locator("#passage-toggle")
        assert toggle.get_attribute("aria-expanded") == "false"
        assert page.locator("#passage-context").is_hidden()
        toggle.click()
        page.wait_for_function(NODE_TEXT)
        assert toggle.get_attribute("aria-expanded") == "true"
        node = expected["context"]["node"]
        assert page.text_content("#passage-node-text") == node["text"]
        assert page.locator("#passage-node-text").is_visible()
        span = page.locator("#passage-node-text mark.span")
        assert span.count() == 1 and span.text_content() == expected["text"]
        assert expected["text"] in node["text"]
        assert span.locator("mark.quote").first.text_content() == quoted
        parent = expected["context"]["parent"]
        assert page.locator("#passage-parent").is_visible() == (parent is not None)

        # one click copies the full citation: title, date, where, source file and offsets
        assert page.text_content("#passage-citation") == full_citation(citation)
        page.click("#passage-copy")
        page.wait_for_function("() => document.getElementById('passage-copied').textContent === 'Copied'")
        assert page.evaluate("() => navigator.clipboard.readText()") == full_citation(citation)

        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")
        page.wait_for_function(f"() => document.activeElement.dataset.id === '{first}'")  # focus went back


def _sse(done: dict[str, object], *deltas: str) -> str:
    """A /v1/ask stream as the server sends it: CRLF line ends and a keep-alive comment."""
    events = [f"event: delta\r\ndata: {json.dumps({'text': d})}\r\n\r\n" for d in deltas]
    events.append(": ping\r\n\r\n")
    events.append(f"event: done\r\ndata: {json.dumps(done)}\r\n\r\n")
    return "".join(events)


def _reply_to_ask(
    page: sync_api.Page, body: str, status: int = 200, content_type: str = "text/event-stream"
) -> None:
    """Make this page's /v1/ask answer `body`: for what no real question reliably produces."""
    page.route("**/v1/ask", lambda route: route.fulfill(status=status, content_type=content_type, body=body))


def _cited(n: int, passage_id: str, text: str, citation: dict[str, object]) -> dict[str, object]:
    return {"n": n, "id": passage_id, "text": text, "score": 1.0, "citation": citation}


def _done(answer: str, *citations: dict[str, object], warnings: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        "answer": answer,
        "citations": list(citations),
        "backend": "scripted",
        "abstained": False,
        "warnings": list(warnings),
        "took_ms": 1.0,
        "query": "anything",
        "support": {"level": "strong", "score": 0.9},
    }


def test_page_passage_of_a_reply_shows_the_comment_it_answers(tab: Tab, client: httpx.Client) -> None:
    """Which passages an answer cites is up to the backend, so cite a real reply directly."""
    found = client.post("/v1/search", json={"query": "probation", "k": 1, "filters": {"kind": "reply"}})
    reply = found.json()["results"][0]
    done = _done("A reader replied [1].", _cited(1, reply["id"], reply["text"], reply["citation"]))
    page = tab.page
    _reply_to_ask(page, _sse(done, "A reader replied [1]."))
    turn = tab.ask("What did readers reply?")
    turn.locator(".source-open").first.click()
    page.locator("#passage").wait_for(state="visible")
    c = reply["citation"]
    assert page.text_content("#passage-where") == f"reply {c['reply']} to comment {c['comment']}"
    assert page.text_content("#passage-toggle") == "Show full reply"
    page.click("#passage-toggle")
    page.wait_for_function(NODE_TEXT)
    expected = client.get(f"/v1/passages/{reply['id']}").json()
    parent = expected["context"]["parent"]
    assert page.text_content("#passage-node-text") == expected["context"]["node"]["text"]
    assert page.text_content("#passage-node-text mark.span") == reply["text"]
    assert page.locator("#passage-parent").is_visible()
    assert page.text_content("#passage-parent-heading") == f"It replies to comment {parent['comment']}"
    assert page.text_content("#passage-parent-text") == parent["text"]
    assert page.text_content("#passage-citation") == full_citation(c)
    page.click("#passage-close")
    page.locator("#passage").wait_for(state="hidden")
    page.wait_for_function("() => document.activeElement.classList.contains('source-open')")


def test_page_reports_an_error_response(tab: Tab) -> None:
    page = tab.page
    body = json.dumps({"error": {"code": "unknown_backend", "message": "unknown backend 'x'"}})
    _reply_to_ask(page, body, status=400, content_type="application/json")
    tab.send("anything")
    error = page.locator(f"{LAST_TURN} .error")
    error.wait_for(state="visible")
    assert error.text_content() == "unknown backend 'x' (400)"
    assert tab.last_turn().get_attribute("data-state") == "error"
    assert tab.last_turn().get_attribute("aria-busy") == "false"
    assert page.locator("#ask-button").is_visible() and page.locator("#stop-button").is_hidden()


def test_page_keeps_streamed_text_and_says_when_a_stream_is_cut_off(tab: Tab) -> None:
    page = tab.page
    _reply_to_ask(page, f"event: delta\r\ndata: {json.dumps({'text': 'Half an ans'})}\r\n\r\n")
    tab.send("anything")
    page.locator(f"{LAST_TURN} .error").wait_for(state="visible")
    assert tab.last_turn().locator(".answer").text_content() == "Half an ans"
    assert "stopped before it was complete" in (tab.last_turn().locator(".error").text_content() or "")


HOSTILE = '<img src=x onerror="window.__pwned=1">'


def test_page_renders_markup_in_answers_and_passages_as_text(tab: Tab) -> None:
    """Comments hold URLs and stray markup: all of it must show as text and none of it run."""
    citation = {
        "document_id": "000_x",
        "title": "<b>Bold</b> title",
        "date": "2020-06-12",
        "kind": "comment",
        "comment": 4,
        "reply": None,
        "source": "000_x.txt",
        "start": 0,
        "end": 10,
    }
    text = "<script>window.__pwned=2</script> see http://example.com/?a=<i>x</i>"
    cited = _cited(1, "hostile", text, citation)
    done = _done(f"Says {HOSTILE} here [1].", cited, warnings=("<u>warning</u>",))
    page = tab.page
    _reply_to_ask(page, _sse(done, HOSTILE))
    turn = tab.ask(f"<i>{HOSTILE}</i>")
    assert turn.locator(".question").text_content() == f"<i>{HOSTILE}</i>"
    turn.locator(".answer a.cite").first.click()
    page.locator("#passage").wait_for(state="visible")
    assert turn.locator(".answer").text_content() == f"Says {HOSTILE} here [1]."
    assert page.text_content("#passage-title") == "<b>Bold</b> title"
    assert page.text_content("#passage-where") == "comment 4"
    assert page.text_content("#passage-text") == text
    assert page.text_content("#passage-citation") == full_citation(citation)
    assert turn.locator(".warnings").text_content() == "<u>warning</u>"
    tags = "img, b, i, u, script"
    injected = page.evaluate(f"() => document.querySelectorAll(':is(main, dialog) :is({tags})').length")
    assert injected == 0
    assert page.evaluate("() => window.__pwned") is None


def test_api_docs_render_offline_from_this_origin(browser: sync_api.Browser, server: LiveServer) -> None:
    path, title = "/docs", ".swagger-ui .info .title"
    ctx = browser.new_context()
    try:
        tab = Tab(ctx.new_page())
        tab.page.goto(f"{server.url}{path}")
        tab.page.wait_for_selector(title, timeout=30_000)
        assert "Probation blog archive" in (tab.page.text_content(title) or "")
        tab.page.get_by_text("/v1/search").first.wait_for(timeout=30_000)
        ours = (f"{server.url}/", "data:", "blob:")
        assert [u for u in tab.requests if not u.startswith(ours)] == []
        assert tab.errors == []
    finally:
        ctx.close()


def test_page_asks_for_a_key_when_the_server_wants_one(
    browser: sync_api.Browser, settings: Settings, retriever: Retriever
) -> None:
    """A server with keys answers 401: the page asks for a key, says when one is refused, keeps the
    accepted one in this tab's sessionStorage and sends it as a Bearer header from then on."""
    keyed = settings.model_copy(update={"api_keys": SecretStr("page-key-1")})
    with LiveServer(create_app(keyed, retriever=retriever)) as live:
        with contextmanager(open_tab)(browser, live, viewport={"width": 1280, "height": 900}) as tab:
            page = tab.page
            sent: list[str | None] = []
            page.on("request", lambda r: "/v1/" in r.url and sent.append(r.headers.get("authorization")))
            tab.send(ANSWERED)
            page.locator("#key").wait_for(state="visible")
            assert "API key" in (page.text_content("#key-reason") or "")
            page.fill("#key-input", "not-the-key")
            page.click("#key-submit")
            page.wait_for_function(
                "() => document.getElementById('key-reason').textContent.includes('did not accept')"
            )
            assert page.locator("#key").is_visible()
            page.fill("#key-input", "page-key-1")
            page.click("#key-submit")
            turn = tab.settle()
            assert turn.locator(".answer").text_content()
            assert page.evaluate("() => sessionStorage.getItem('rag.apiKey')") == "page-key-1"
            assert sent[:3] == [None, "Bearer not-the-key", "Bearer page-key-1"]
            turn.locator(".answer a.cite").first.click()  # the passage lookup carries the key too
            page.locator("#passage").wait_for(state="visible")
            page.click("#passage-toggle")
            page.wait_for_function(NODE_TEXT)
            assert len(sent) == 4 and sent[-1] == "Bearer page-key-1"


def test_page_reports_the_401_when_the_key_prompt_is_cancelled(
    browser: sync_api.Browser, settings: Settings, retriever: Retriever
) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("page-key-2")})
    with LiveServer(create_app(keyed, retriever=retriever)) as live:
        with contextmanager(open_tab)(browser, live, viewport={"width": 1280, "height": 900}) as tab:
            page = tab.page
            tab.send("anything")
            page.locator("#key").wait_for(state="visible")
            page.click("#key-cancel")
            page.wait_for_function(SETTLED)
            error = tab.last_turn().locator(".error")
            assert error.is_visible()
            assert "API key" in (error.text_content() or "") and "(401)" in (error.text_content() or "")
