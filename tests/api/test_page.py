"""The chat page (api/routes/page.py, api/static/) in real headless Chromium against the live server.

The browser is Debian's chromium driven by Playwright for Python (`playwright install` cannot
download browsers offline); set RAG_CHROMIUM to use another binary. Questions go to the server's
real /v1/ask, except where a test needs what no real question reliably produces (a cited reply,
hostile markup, an error, a cut-off stream): there the browser answers /v1/ask via `page.route`,
and everything else, /v1/passages included, is still the live server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.main import create_app
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path(os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ANSWERED = "From when will HM Inspectorate of Probation have a role in the independent quality assurance of Serious Further Offence reviews?"  # noqa: E501 - dev.jsonl d002
UNANSWERABLE = "How much profit has Sodexo made from its CRC contracts so far?"  # dev.jsonl d015
ANSWER_TIMEOUT_MS = 180_000  # a local chat model on two shared cores can take a while


class Tab:
    """A page in a fresh browser context, with every request and script error it saw."""

    def __init__(self, page: sync_api.Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def ask(self, question: str) -> None:
        """Type a question and submit it with Enter, then wait for the finished answer."""
        self.page.fill("#question", question)
        self.page.press("#question", "Enter")
        self.page.wait_for_selector("#result:not([hidden])")
        self.page.wait_for_function(
            "() => document.getElementById('result').getAttribute('aria-busy') === 'false'",
            timeout=ANSWER_TIMEOUT_MS,
        )
        error = self.page.locator("#error")
        assert error.is_hidden(), error.text_content()

    def overflows(self) -> bool:
        return bool(
            self.page.evaluate(
                "() => document.documentElement.scrollWidth > document.documentElement.clientWidth"
            )
        )


@pytest.fixture(scope="session")
def browser() -> Iterator[sync_api.Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no chromium at {CHROMIUM}: `apt-get install chromium`, or set RAG_CHROMIUM")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _open(browser: sync_api.Browser, server: LiveServer, **context: object) -> Iterator[Tab]:
    ctx = browser.new_context(**context)  # type: ignore[arg-type]
    try:
        tab = Tab(ctx.new_page())
        tab.page.goto(f"{server.url}/")
        yield tab
        assert tab.errors == [], "script errors on the page"
    finally:
        ctx.close()


@pytest.fixture
def tab(browser: sync_api.Browser, server: LiveServer) -> Iterator[Tab]:
    yield from _open(browser, server, viewport={"width": 1280, "height": 900})


@pytest.fixture
def phone(browser: sync_api.Browser, server: LiveServer) -> Iterator[Tab]:
    yield from _open(browser, server, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)


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


def test_page_answer_links_open_the_cited_passage(tab: Tab, server: LiveServer, client: httpx.Client) -> None:
    page = tab.page
    tab.ask(ANSWERED)
    links = page.locator("#answer a.cite")
    assert links.count() >= 1, page.locator("#answer").text_content()
    assert not page.locator("#result").evaluate("e => e.classList.contains('abstained')")

    # keyboard only: from the question field, Tab past the Ask button to the first [n] link
    page.focus("#question")
    page.keyboard.press("Tab")
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
    where = {"post": "post", "comment": f"comment {citation['comment']}"}.get(
        citation["kind"], f"reply {citation['reply']} to comment {citation['comment']}"
    )
    assert page.text_content("#passage-where") == where
    assert page.text_content("#passage-text") == expected["text"]  # literally, markup and all

    toggle = page.locator("#passage-toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert page.locator("#passage-context").is_hidden()
    toggle.click()
    page.wait_for_function("() => document.getElementById('passage-node-text').textContent.length > 0")
    assert toggle.get_attribute("aria-expanded") == "true"
    node = expected["context"]["node"]
    assert page.text_content("#passage-node-text") == node["text"]
    assert page.locator("#passage-node-text").is_visible()
    assert expected["text"] in node["text"]
    assert page.text_content("#passage-node-text mark") == expected["text"]
    parent = expected["context"]["parent"]
    assert page.locator("#passage-parent").is_visible() == (parent is not None)

    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate("() => document.activeElement.dataset.id") == first  # focus went back


def test_page_shows_abstention_for_a_question_the_archive_cannot_answer(tab: Tab) -> None:
    page = tab.page
    tab.ask(UNANSWERABLE)
    assert page.locator("#result").evaluate("e => e.classList.contains('abstained')")
    status = page.locator("#status")
    assert status.is_visible()
    assert status.text_content() == "Not answered by the archive"
    assert (page.text_content("#answer") or "").strip()
    if page.locator("#sources .source").count():
        assert "do not answer" in (page.text_content("#sources-heading") or "")


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


def test_page_passage_of_a_reply_shows_the_comment_it_answers(tab: Tab, client: httpx.Client) -> None:
    """Which passages an answer cites is up to the backend, so cite a real reply directly."""
    found = client.post("/v1/search", json={"query": "probation", "k": 1, "filters": {"kind": "reply"}})
    reply = found.json()["results"][0]
    done = {
        "answer": "A reader replied [1].",
        "citations": [_cited(1, reply["id"], reply["text"], reply["citation"])],
        "backend": "scripted",
        "abstained": False,
        "warnings": [],
        "took_ms": 1.0,
    }
    page = tab.page
    _reply_to_ask(page, _sse(done, "A reader replied [1]."))
    tab.ask("What did readers reply?")
    page.locator("#sources .source-open").first.click()
    page.locator("#passage").wait_for(state="visible")
    c = reply["citation"]
    assert page.text_content("#passage-where") == f"reply {c['reply']} to comment {c['comment']}"
    assert page.text_content("#passage-toggle") == "Show full reply"
    page.click("#passage-toggle")
    page.wait_for_function("() => document.getElementById('passage-node-text').textContent.length > 0")
    expected = client.get(f"/v1/passages/{reply['id']}").json()
    parent = expected["context"]["parent"]
    assert page.text_content("#passage-node-text") == expected["context"]["node"]["text"]
    assert page.locator("#passage-parent").is_visible()
    assert page.text_content("#passage-parent-heading") == f"It replies to comment {parent['comment']}"
    assert page.text_content("#passage-parent-text") == parent["text"]
    page.click("#passage-close")
    page.locator("#passage").wait_for(state="hidden")
    assert page.evaluate("() => document.activeElement.classList.contains('source-open')")


def test_page_reports_an_error_response(tab: Tab) -> None:
    page = tab.page
    body = json.dumps({"error": {"code": "unknown_backend", "message": "unknown backend 'x'"}})
    _reply_to_ask(page, body, status=400, content_type="application/json")
    page.fill("#question", "anything")
    page.press("#question", "Enter")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert error.text_content() == "unknown backend 'x' (400)"
    assert page.get_attribute("#result", "aria-busy") == "false"


def test_page_keeps_streamed_text_and_says_when_a_stream_is_cut_off(tab: Tab) -> None:
    page = tab.page
    _reply_to_ask(page, f"event: delta\r\ndata: {json.dumps({'text': 'Half an ans'})}\r\n\r\n")
    page.fill("#question", "anything")
    page.press("#question", "Enter")
    page.locator("#error").wait_for(state="visible")
    assert page.text_content("#answer") == "Half an ans"
    assert "stopped before it was complete" in (page.text_content("#error") or "")


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
    done = {
        "answer": f"Says {HOSTILE} here [1].",
        "citations": [_cited(1, "hostile", text, citation)],
        "backend": "scripted",
        "abstained": False,
        "warnings": ["<u>warning</u>"],
        "took_ms": 1.0,
    }
    page = tab.page
    _reply_to_ask(page, _sse(done, HOSTILE))
    tab.ask("anything")
    page.locator("#answer a.cite").first.click()
    page.locator("#passage").wait_for(state="visible")
    assert page.text_content("#answer") == f"Says {HOSTILE} here [1]."
    assert page.text_content("#passage-title") == "<b>Bold</b> title"
    assert page.text_content("#passage-where") == "comment 4"
    assert page.text_content("#passage-text") == text
    assert page.text_content("#warnings") == "<u>warning</u>"
    tags = "img, b, i, u, script"
    injected = page.evaluate(f"() => document.querySelectorAll(':is(main, dialog) :is({tags})').length")
    assert injected == 0
    assert page.evaluate("() => window.__pwned") is None


def test_page_fits_a_phone_width_screen(phone: Tab) -> None:
    page = phone.page
    assert not phone.overflows()
    phone.ask(ANSWERED)
    assert page.locator("#answer a.cite").count() >= 1
    assert not phone.overflows()
    page.locator("#sources .source-open").first.click()
    page.click("#passage-toggle")
    page.wait_for_function("() => document.getElementById('passage-node-text').textContent.length > 0")
    assert not phone.overflows()
    box = page.locator("#passage").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375


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
        with contextmanager(_open)(browser, live, viewport={"width": 1280, "height": 900}) as tab:
            page = tab.page
            sent: list[str | None] = []
            page.on("request", lambda r: "/v1/" in r.url and sent.append(r.headers.get("authorization")))
            page.fill("#question", ANSWERED)
            page.press("#question", "Enter")
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
            page.wait_for_function(
                "() => document.getElementById('result').getAttribute('aria-busy') === 'false'",
                timeout=ANSWER_TIMEOUT_MS,
            )
            assert page.locator("#error").is_hidden(), page.text_content("#error")
            assert page.text_content("#answer")
            assert page.evaluate("() => sessionStorage.getItem('rag.apiKey')") == "page-key-1"
            assert sent[:3] == [None, "Bearer not-the-key", "Bearer page-key-1"]
            page.locator("#answer a.cite").first.click()  # the passage lookup carries the key too
            page.locator("#passage").wait_for(state="visible")
            page.click("#passage-toggle")
            page.wait_for_function(
                "() => document.getElementById('passage-node-text').textContent.length > 0"
            )
            assert len(sent) == 4 and sent[-1] == "Bearer page-key-1"


def test_page_reports_the_401_when_the_key_prompt_is_cancelled(
    browser: sync_api.Browser, settings: Settings, retriever: Retriever
) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("page-key-2")})
    with LiveServer(create_app(keyed, retriever=retriever)) as live:
        with contextmanager(_open)(browser, live, viewport={"width": 1280, "height": 900}) as tab:
            page = tab.page
            page.fill("#question", "anything")
            page.press("#question", "Enter")
            page.locator("#key").wait_for(state="visible")
            page.click("#key-cancel")
            error = page.locator("#error")
            error.wait_for(state="visible")
            assert "API key" in (error.text_content() or "") and "(401)" in (error.text_content() or "")
