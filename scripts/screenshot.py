"""A screenshot of the chat page holding a conversation, for the README (docs/chat.png).

Starts `rag serve` as a real subprocess on a free 127.0.0.1 port (scripts/loadtest.py's, over
RAG_DATA_DIR and RAG_INDEX_DIR, building the index if missing), drives Chromium through a
conversation (an answer, a follow-up the archive does not answer, a question on another subject)
with Playwright, and writes a PNG of the whole page. `--dialog` also opens the first cited passage with
its context; `--width 360` and `--dark` give a phone's view or the dark theme. Needs the test
extras (Playwright) and Chromium (`make setup-test`).

    .venv/bin/python scripts/screenshot.py [--out docs/chat.png] [--width 900] [--dark] [--dialog]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest import started_server  # noqa: E402 - a sibling script: `rag serve` on a free port

from tests.browser import SETTLED, launch  # noqa: E402 - the page tests' Chromium

# An answer; a follow-up ("it") that the archive cannot answer; a question on another subject.
CONVERSATION = [
    "Which company ran the Kent, Surrey and Sussex CRC?",
    "How many staff did it employ?",
    "What did one commenter say would be in nobody's interest after the botched privatisation of probation?",
]


def converse(page: Page, questions: list[str]) -> None:
    """Ask each question as a reader would (type, Enter) and wait for its answer to finish."""
    for question in questions:
        page.fill("#question", question)
        page.press("#question", "Enter")
        page.wait_for_function(SETTLED, timeout=300_000)


def shoot(url: str, out: Path, width: int, dark: bool, dialog: bool) -> None:
    with sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context(
                viewport={"width": width, "height": 900 if width > 600 else 740},
                color_scheme="dark" if dark else "light",
                device_scale_factor=1,
            )
            page = context.new_page()
            page.goto(f"{url}/")
            converse(page, CONVERSATION)
            if dialog:
                page.locator("#thread .turn").first.locator("a.cite").first.click()
                page.click("#passage-toggle")
                page.wait_for_function("() => document.getElementById('passage-node-text').textContent")
                page.screenshot(path=str(out))  # the dialog is on screen, over the page
            else:
                page.evaluate("() => document.activeElement.blur()")  # no focus ring in the picture
                # A window as tall as the conversation, so the question box sits at its foot as on
                # screen (a full-page capture would leave it stuck halfway down the picture).
                height = page.evaluate("() => document.documentElement.scrollHeight")
                page.set_viewport_size({"width": width, "height": height})
                page.screenshot(path=str(out))
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "chat.png")
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    parser.add_argument("--dialog", action="store_true", help="open the first cited passage, in context")
    parser.add_argument("--url", help="use this running server instead of starting one")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.url:
        shoot(args.url.rstrip("/"), args.out, args.width, args.dark, args.dialog)
    else:
        with started_server() as (url, _):
            shoot(url, args.out, args.width, args.dark, args.dialog)
    print(args.out)


if __name__ == "__main__":
    main()
