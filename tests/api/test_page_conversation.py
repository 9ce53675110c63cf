"""The chat page holds a conversation, in real headless Chromium against live servers: follow-ups
sent with their history, Stop (and Esc) cancelling the server's work, the thread surviving a reload,
an honest "not found" and weak support, and a phone-width screen in light and dark.

Every question goes to a real /v1/ask. The extractive backend answers, except in the Stop test,
where the openai backend talks to a slow loopback stand-in (tests/standin.py) so a stream is
still running when it is stopped, and the stand-in sees whether the server let go of it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api

from api.main import create_app
from rag.eval.retrieval import load_questions
from rag.search.retrieval import Retriever
from rag.settings import Settings
from tests.browser import SETTLED, Tab, open_tab
from tests.conftest import DEV, QUESTION_SETS, LiveServer
from tests.standin import StandIn

pytestmark = pytest.mark.browser

TUNE = QUESTION_SETS[1]  # ../shared/eval/tune.jsonl, or its copy in tests/data
# Turn 2 and 3 only make sense after turn 1: "she" is the person it names.
CONVERSATION = ["Who is Suki Binning?", "What did she say about the pandemic?", "When did she say it?"]
ANSWERED = "From when will HM Inspectorate of Probation quality assure Serious Further Offence reviews?"
DARK_BG = "rgb(22, 24, 28)"  # --bg in app.css under prefers-color-scheme: dark


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def questions(path: Path, answerable: bool) -> list[str]:
    return [q.question for q in load_questions(path) if q.answerable == answerable]


def first_answer(
    client: httpx.Client, candidates: list[str], wanted: Callable[[dict[str, Any]], bool]
) -> str:
    """The first question whose real /v1/ask answer is `wanted`: found by asking, not assumed."""
    for question in candidates:
        if wanted(client.post("/v1/ask", json={"question": question}).json()):
            return question
    raise AssertionError("no question gives the answer this test needs")


def test_page_holds_a_three_turn_conversation_and_sends_the_history(tab: Tab) -> None:
    page = tab.page
    # Shift+Enter makes a new line and sends nothing; Enter sends the question.
    page.fill("#question", "Who is Suki")
    page.press("#question", "Shift+Enter")
    page.keyboard.type("Binning?")
    assert page.input_value("#question") == "Who is Suki\nBinning?" and tab.asks == []
    page.press("#question", "Enter")
    first = tab.settle()
    assert first.locator(".question").text_content() == "Who is Suki\nBinning?"
    assert page.input_value("#question") == ""
    assert page.evaluate("() => document.activeElement.id") == "question"  # focus back in the box
    assert "Suki Binning" in (first.locator(".answer").text_content() or "")

    second = tab.ask(CONVERSATION[1])
    assert page.evaluate("() => document.activeElement.id") == "question"
    third = tab.ask(CONVERSATION[2])

    # every turn stays, newest at the bottom, each with its question, answer and sources
    assert tab.turns().count() == 3
    assert [t.locator(".question").text_content() for t in tab.turns().all()] == [
        "Who is Suki\nBinning?",
        *CONVERSATION[1:],
    ]
    for turn in (first, second, third):
        assert turn.locator(".answer a.cite").count() >= 1 and tab.source_ids(turn)
    assert "29th May" in (third.locator(".answer").text_content() or "")  # "it": what she said, and when

    # each ask carried the earlier turns as history (follow-ups as the query they were searched with)
    assert [a["history"] for a in tab.asks[:1]] == [[]]
    searched = second.locator(".searched-query").text_content() or ""
    assert tab.asks[1]["history"] == ["Who is Suki\nBinning?"]
    assert tab.asks[2]["history"] == ["Who is Suki\nBinning?", searched]
    assert second.locator(".searched").is_visible() and "Suki Binning" in searched
    assert first.locator(".searched").is_hidden()  # asked as it was: no "searched for"
    with_history = tab.source_ids(second)

    # the same words with no history (a new conversation) find other passages
    page.click("#new-conversation")
    alone = tab.ask(CONVERSATION[1])
    assert tab.asks[-1]["history"] == [] and tab.turns().count() == 1
    assert alone.locator(".searched").is_hidden()
    assert tab.source_ids(alone) != with_history


def test_page_streaming_answer_is_a_polite_live_region(tab: Tab) -> None:
    page = tab.page
    tab.send(ANSWERED)
    turn = tab.last_turn()
    live = turn.locator(".live")  # the verdict (not found, weak support) and the answer
    assert live.get_attribute("aria-live") == "polite" and live.locator(".answer").count() == 1
    tab.settle()
    assert live.get_attribute("aria-busy") == "false" and turn.get_attribute("aria-busy") == "false"
    assert live.locator(".verdict").count() == 1
    assert turn.locator(".status").get_attribute("role") == "status"
    assert page.evaluate("() => document.activeElement.id") == "question"


@pytest.fixture
def slow_llm() -> Iterator[StandIn]:
    with StandIn("slow", interval=0.05) as llm:
        yield llm


@pytest.fixture
def llm_server(slow_llm: StandIn, settings: Settings, retriever: Retriever) -> Iterator[LiveServer]:
    update = {"backend": "openai", "openai_base_url": slow_llm.url, "llm_timeout": 120.0, "llm_retries": 0}
    with LiveServer(create_app(settings.model_copy(update=update), retriever=retriever)) as live:
        yield live


def test_page_stop_mid_stream_ends_the_request_and_the_servers_work(
    browser: sync_api.Browser, llm_server: LiveServer, slow_llm: StandIn
) -> None:
    with contextmanager(open_tab)(browser, llm_server, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        answered = tab.ask(ANSWERED)  # a quick answer first, so a source can be opened mid-stream
        assert slow_llm.finished == 1 and answered.get_attribute("data-state") == "done"

        # From now on one piece every 8 s: the rest of a stream takes 24 s after its first piece shows,
        # ample time to stop it first even on a loaded machine.
        slow_llm.interval = 8.0
        opened = slow_llm.opened
        tab.send("And what will the inspectorate do?")
        streaming = tab.turns().nth(1)
        streaming.locator(".answer").filter(has_text="The inspectorate").wait_for(timeout=60_000)
        assert streaming.get_attribute("data-state") == "pending"
        assert streaming.locator(".live").get_attribute("aria-busy") == "true"  # read out once complete
        assert page.locator("#stop-button").is_visible() and page.locator("#ask-button").is_hidden()
        assert slow_llm.opened == opened + 1 and slow_llm.closed == opened

        # Esc with a passage open closes the passage, and only that: the answer keeps streaming
        answered.locator(".answer a.cite").first.click()
        page.locator("#passage").wait_for(state="visible")
        page.keyboard.press("Escape")
        page.locator("#passage").wait_for(state="hidden")
        assert streaming.get_attribute("data-state") == "pending"

        # Esc again stops it: the page is usable at once, and the server lets go of the LLM call
        page.keyboard.press("Escape")
        page.wait_for_function(SETTLED)
        assert streaming.get_attribute("data-state") == "stopped"
        assert "Stopped" in (streaming.locator(".status").text_content() or "")
        assert "The inspectorate" in (streaming.locator(".answer").text_content() or "")  # kept
        assert page.locator("#ask-button").is_visible() and page.locator("#stop-button").is_hidden()
        # focus ends in the question box, not on the [n] the closed passage gives it back to
        page.wait_for_function("() => document.activeElement.id === 'question'")
        assert wait_for(lambda: slow_llm.closed == opened + 1, 20), "the server kept streaming from the LLM"
        assert slow_llm.finished == 1  # cut before its end, not finished

        # at once another question goes out; the Stop button ends that one too
        tab.send("Who quality assures them?")
        assert wait_for(lambda: slow_llm.opened == opened + 2, 30)
        page.click("#stop-button")
        page.wait_for_function(SETTLED)
        assert tab.last_turn().get_attribute("data-state") == "stopped"
        assert wait_for(lambda: slow_llm.closed == opened + 2, 20), "the server kept streaming from the LLM"
        assert slow_llm.finished == 1
        assert [a["question"] for a in tab.asks] == [
            ANSWERED,
            "And what will the inspectorate do?",
            "Who quality assures them?",
        ]


def test_page_reload_keeps_the_thread_and_new_conversation_clears_it(tab: Tab) -> None:
    page = tab.page
    first = tab.ask(CONVERSATION[0])
    second = tab.ask(CONVERSATION[1])
    before = [
        (t.locator(".question").text_content(), t.locator(".answer").text_content(), tab.source_ids(t))
        for t in (first, second)
    ]
    searched = second.locator(".searched-query").text_content()

    page.reload()
    assert tab.turns().count() == 2
    after = [
        (t.locator(".question").text_content(), t.locator(".answer").text_content(), tab.source_ids(t))
        for t in tab.turns().all()
    ]
    assert after == before
    assert tab.turns().last.locator(".searched-query").text_content() == searched
    assert page.evaluate("() => localStorage.length") == 0  # kept in this tab only
    # the restored thread still works: its links open passages, and a follow-up carries it
    tab.turns().last.locator(".answer a.cite").first.click()
    page.locator("#passage").wait_for(state="visible")
    page.keyboard.press("Escape")
    third = tab.ask(CONVERSATION[2])
    assert tab.asks[-1]["history"] == [CONVERSATION[0], searched]
    assert "29th May" in (third.locator(".answer").text_content() or "")

    page.click("#new-conversation")
    assert tab.turns().count() == 0
    assert page.locator("#new-conversation").is_hidden() and page.locator("#welcome").is_visible()
    assert page.evaluate("() => document.activeElement.id") == "question"
    page.reload()
    assert tab.turns().count() == 0
    assert page.evaluate("() => sessionStorage.getItem('rag.thread')") is None


def test_page_says_the_archive_does_not_appear_to_answer_an_unanswerable_question(
    tab: Tab, client: httpx.Client
) -> None:
    question = first_answer(client, questions(TUNE, answerable=False), lambda a: bool(a["abstained"]))
    expected = client.post("/v1/ask", json={"question": question}).json()
    turn = tab.ask(question)
    assert "abstained" in (turn.get_attribute("class") or "")
    verdict = turn.locator(".verdict")
    assert verdict.is_visible()
    assert verdict.text_content() == "The archive does not appear to answer this question."
    # the closest passages are listed as such, not as the sources of an answer
    assert turn.locator(".sources-heading").text_content() == "Closest passages (they do not answer it)"
    assert tab.source_ids(turn) == [c["id"] for c in expected["citations"]]
    assert turn.locator(".answer").is_hidden() and turn.locator(".answer a.cite").count() == 0
    assert turn.locator(".snippet").count() == len(expected["citations"])


def test_page_says_when_an_answer_is_weakly_supported(tab: Tab, client: httpx.Client) -> None:
    weak = first_answer(client, questions(DEV, answerable=True), lambda a: a["support"]["level"] == "weak")
    turn = tab.ask(weak)
    assert "weak" in (turn.get_attribute("class") or "").split()
    assert "Weakly supported" in (turn.locator(".verdict").text_content() or "")
    assert turn.locator(".answer a.cite").count() >= 1
    assert turn.locator(".sources-heading").text_content() == "Sources"
    strong = tab.ask(ANSWERED)
    assert strong.locator(".verdict").is_hidden()


def png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the 8-byte signature
    return width, height


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_page_at_360px_has_no_horizontal_scroll(
    browser: sync_api.Browser, server: LiveServer, client: httpx.Client, scheme: str
) -> None:
    unanswerable = first_answer(client, questions(TUNE, answerable=False), lambda a: bool(a["abstained"]))
    phone = {"width": 360, "height": 740}
    options = {"viewport": phone, "is_mobile": True, "has_touch": True, "color_scheme": scheme}
    with contextmanager(open_tab)(browser, server, **options) as tab:
        page = tab.page
        dark = page.evaluate("() => getComputedStyle(document.body).backgroundColor") == DARK_BG
        assert dark == (scheme == "dark")
        assert not tab.overflows()
        for question in (*CONVERSATION[:2], unanswerable):
            tab.ask(question)
        assert tab.turns().count() == 3
        assert "abstained" in (tab.last_turn().get_attribute("class") or "")
        assert not tab.overflows()
        shot = page.screenshot(full_page=True)
        assert png_size(shot)[0] == 360  # the whole page is as wide as the screen: nothing to scroll to

        tab.turns().first.locator(".answer a.cite").first.click()
        page.click("#passage-toggle")
        page.wait_for_function("() => document.getElementById('passage-node-text').textContent.length > 0")
        assert not tab.overflows()
        box = page.locator("#passage").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
        assert png_size(page.screenshot(full_page=True))[0] == 360
