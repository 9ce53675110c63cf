"""Where answers run: a thread budget of their own, and cancelled when their client goes away.

Starlette runs sync routes, sync dependencies and `iterate_in_threadpool` on one pool (40
threads). An answer can hold a thread for ``RAG_LLM_TIMEOUT`` seconds waiting on an LLM, so 40 asks
against a hanging upstream would leave every search, passage lookup and health probe queueing
behind them. Answers (asks, chat completions) therefore run on a `CapacityLimiter` of their own,
``RAG_ASK_WORKERS`` threads; more asks wait their turn without holding a thread. Health probes and
the dependencies are `async` and touch no pool at all.

An answer's LLM deadline runs from the request's admission (`enlist`), not from
when it gets a thread: with more slots than threads (`RAG_MAX_CONCURRENT_ASKS` over
`RAG_ASK_WORKERS`) an ask that waited for one would otherwise get a whole `RAG_LLM_TIMEOUT` on
top of the wait. One whose deadline passed while it waited falls back to the extractive answer.

A client that disconnects cancels its answer (`Answerer.cancel`), which cuts the backend's
upstream call instead of letting it run to its deadline for nobody. At shutdown, answers still
waiting on their LLM when the grace period is nearly over have their backend call cut
(`cut_answers`): each falls back to the extractive answer and finishes, a stream with its `done`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request

from api.deps import AppState
from api.limits import ADMITTED
from rag.answer.answering import Answerer

T = TypeVar("T")
_END = object()


def _next(items: Iterator[T]) -> T | object:
    return next(items, _END)


def enlist(state: AppState, request: Request, answerer: Answerer) -> None:
    """Make `answerer` one of the server's answers: listed, so a shutdown can cut its LLM call in
    time (`cut_answers`), and with its backend call's deadline `RAG_LLM_TIMEOUT` after the request
    was admitted (`api.limits.ConcurrencyLimit`), or after now for a request no slot admitted."""
    state.answers.add(answerer)
    admitted: float = request.scope.get(ADMITTED, time.monotonic())
    answerer.backend.deadline = admitted + answerer.backend.settings.llm_timeout


async def run_answer(
    request: Request, answerer: Answerer, work: Callable[[], T], limiter: anyio.CapacityLimiter
) -> T:
    """`work()` on the answer pool; if the client disconnects meanwhile, the answer is cancelled
    (the thread then ends within moments, and only then does this return)."""

    async def watch() -> None:
        # The body has been read, so the next message is the disconnect (uvicorn also sends one
        # once the response is complete, by which time this task has been cancelled).
        while (await request.receive())["type"] != "http.disconnect":
            pass
        answerer.cancel()

    outcome: list[T] = []
    failure: list[BaseException] = []
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            outcome.append(await anyio.to_thread.run_sync(work, limiter=limiter))
        except Exception as exc:  # re-raised below, outside the group, unwrapped
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0]


async def answer_stream(
    items: Iterator[T], answerer: Answerer, limiter: anyio.CapacityLimiter
) -> AsyncIterator[T]:
    """`items` pulled one by one on the answer pool. When the consumer stops early (the client went
    away and the response was cancelled), the answer is cancelled too.

    The pending pull is abandoned on cancellation rather than awaited: the response's task group
    cannot finish its cancellation before the thread returns otherwise. `Answerer.cancel` then makes
    that thread return within moments.
    """
    finished = False
    try:
        while True:
            item = await anyio.to_thread.run_sync(_next, items, limiter=limiter, abandon_on_cancel=True)
            if item is _END:
                finished = True
                return
            yield item  # type: ignore[misc]
    finally:
        if not finished:
            answerer.cancel()


def cut_answers(state: AppState) -> None:
    """Cut the backend call of every answer still being made (from any thread): each falls back to
    the extractive answer, with a warning, and finishes at once."""
    for answerer in list(state.answers):
        answerer.backend.cancel()
