"""A scripted backend for deterministic answering tests: enqueue what it says, read what it saw.

`ScriptedBackend.enqueue("text [1]", ...)` queues one answer, given as the pieces it streams; an
exception among the pieces is raised at that point (after the pieces before it). `history`
records every (prompt, passages) it was called with. The `scripted` fixture registers it in the
default registry under the name "scripted" and removes it afterwards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import ClassVar

import pytest

from rag.answer.prompting import Prompt, Source
from rag.backends import register, unregister
from rag.backends.base import LLMBackend
from rag.errors import BackendError


class ScriptedBackend(LLMBackend):
    name = "scripted"
    aliases = ("script",)
    supports_streaming = True

    # shared by every instance: the API builds a fresh backend per request
    queue: ClassVar[deque[list[str | BaseException]]] = deque()
    history: ClassVar[list[tuple[Prompt, list[Source]]]] = []

    @classmethod
    def enqueue(cls, *pieces: str | BaseException) -> None:
        cls.queue.append(list(pieces))

    @classmethod
    def reset(cls) -> None:
        cls.queue.clear()
        cls.history.clear()

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        type(self).history.append((prompt, list(passages)))
        if not self.queue:
            raise BackendError("scripted backend: nothing enqueued")
        for piece in self.queue.popleft():
            if isinstance(piece, BaseException):
                raise piece
            yield piece


@pytest.fixture(name="scripted")
def scripted_fixture() -> Iterator[type[ScriptedBackend]]:
    ScriptedBackend.reset()
    register(ScriptedBackend)
    yield ScriptedBackend
    unregister(ScriptedBackend.name)
    ScriptedBackend.reset()
