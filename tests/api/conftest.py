"""Browser fixtures for the chat page's tests: one Chromium for the session, a fresh tab per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright import sync_api

from tests.browser import Tab, launch, open_tab
from tests.conftest import LiveServer


@pytest.fixture(scope="session")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        try:
            launched = launch(p)
        except FileNotFoundError as exc:
            pytest.fail(str(exc))
        yield launched
        launched.close()


@pytest.fixture
def tab(browser: sync_api.Browser, server: LiveServer) -> Iterator[Tab]:
    yield from open_tab(browser, server, viewport={"width": 1280, "height": 900})
