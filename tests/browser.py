"""Driving the chat page in real headless Chromium, for the page's tests (tests/api/test_page*.py)
and scripts/screenshot.py.

The browser is Debian's chromium driven by Playwright for Python (`playwright install` cannot
download browsers offline); set RAG_CHROMIUM to use another binary. `Tab` wraps a page in a fresh
browser context and records every request and script error it saw; `open_tab` opens the chat page
of a server in one, and fails the test if the page raised a script error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playwright import sync_api

if TYPE_CHECKING:
    from tests.conftest import LiveServer

CHROMIUM = Path(os.environ.get("RAG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ANSWER_TIMEOUT_MS = 180_000  # a local chat model on two shared cores can take a while
LAST_TURN = "#thread > .turn:last-child"
# True once the last turn is answered, failed or stopped.
SETTLED = (
    "() => { const t = document.querySelector('#thread > .turn:last-child');"
    " return Boolean(t) && t.dataset.state !== 'pending'; }"
)


class Tab:
    """A page in a fresh browser context, with every request and script error it saw."""

    def __init__(self, page: sync_api.Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.asks: list[dict[str, Any]] = []  # the JSON body of every POST /v1/ask, in order
        self.errors: list[str] = []
        page.on("request", self._saw)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _saw(self, request: sync_api.Request) -> None:
        self.requests.append(request.url)
        if request.method == "POST" and request.url.endswith("/v1/ask"):
            self.asks.append(json.loads(request.post_data or "null"))

    def send(self, question: str) -> None:
        """Type a question and send it with Enter, as a reader does."""
        self.page.fill("#question", question)
        self.page.press("#question", "Enter")

    def ask(self, question: str) -> sync_api.Locator:
        """Send a question and wait for its turn to settle; fails on an error. Returns the turn."""
        self.send(question)
        return self.settle()

    def settle(self) -> sync_api.Locator:
        """Wait for the last turn to settle; fails on an error. Returns that turn (it stays that
        turn when more are added)."""
        self.page.wait_for_function(SETTLED, timeout=ANSWER_TIMEOUT_MS)
        turn = self.turns().nth(self.turns().count() - 1)
        error = turn.locator(".error")
        assert error.is_hidden(), error.text_content()
        return turn

    def last_turn(self) -> sync_api.Locator:
        """Whichever turn is last when the locator is used."""
        return self.page.locator(LAST_TURN)

    def turns(self) -> sync_api.Locator:
        return self.page.locator("#thread > .turn")

    def source_ids(self, turn: sync_api.Locator) -> list[str]:
        return [b.get_attribute("data-id") or "" for b in turn.locator(".source-open").all()]

    def overflows(self) -> bool:
        return bool(
            self.page.evaluate(
                "() => document.documentElement.scrollWidth > document.documentElement.clientWidth"
            )
        )


def launch(playwright: sync_api.Playwright) -> sync_api.Browser:
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"no chromium at {CHROMIUM}: `apt-get install chromium`, or set RAG_CHROMIUM")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def open_tab(browser: sync_api.Browser, server: LiveServer, **context: Any) -> Iterator[Tab]:
    """The chat page of `server` in a fresh context (`context`: Playwright's new_context options)."""
    ctx = browser.new_context(**context)
    try:
        tab = Tab(ctx.new_page())
        tab.page.goto(f"{server.url}/")
        yield tab
        assert tab.errors == [], "script errors on the page"
    finally:
        ctx.close()
