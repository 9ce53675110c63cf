"""The contract every answer backend implements: one abstract method, declarative capabilities.

A backend turns a grounded `Prompt` (rag/answer/prompting.py) and the numbered passages behind it into
answer text, yielded as it is produced. It cites passages as ``[n]``; checking and renumbering
those markers is the caller's job (rag/answer/answering.py), as is falling back when a backend fails.
A backend signals failure by raising `BackendError` with a message saying what happened; the message
reaches clients (as a warning), so it never holds the upstream's address or key, which go to the log.

Not here: the registry (rag/backends/__init__.py) and the prompt text (rag/answer/prompting.py).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rag.answer.prompting import Prompt, Source
from rag.errors import InvalidRequestError, describe_validation
from rag.settings import Settings


class LLMBackend(ABC):
    """Base of every backend. Subclasses set the class attributes and implement `generate`."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    supports_streaming: ClassVar[bool] = False
    needs_key: ClassVar[bool] = False
    key_env_var: ClassVar[str | None] = None

    class Options(BaseModel):
        """Per-request knobs; unknown names are refused (422), not ignored."""

        model_config = ConfigDict(extra="forbid")

    def __init__(self, settings: Settings, options: Options | None = None) -> None:
        self.settings = settings
        self.options = options if options is not None else self.Options()
        # When the call must be over, on `time.monotonic()`'s clock; None: RAG_LLM_TIMEOUT after
        # `generate` starts. A server sets it from when it admitted the request, so time spent
        # waiting for a thread counts against the same deadline instead of adding to it.
        self.deadline: float | None = None

    def call_deadline(self) -> float:
        """The `time.monotonic()` by which this call must end (see `deadline`)."""
        if self.deadline is not None:
            return self.deadline
        return time.monotonic() + self.settings.llm_timeout

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None) -> BaseModel:
        """Validate request options against `Options`, raising InvalidRequestError (422)."""
        try:
            return cls.Options(**(options or {}))
        except ValidationError as exc:
            problems = describe_validation(exc.errors(), whole="options", unknown="unknown option")
            known = ", ".join(cls.Options.model_fields) or "none"
            raise InvalidRequestError(
                f"invalid options for backend {cls.name!r}: {problems} (known options: {known})"
            ) from exc

    @classmethod
    def create(cls, settings: Settings, options: Mapping[str, Any] | None = None) -> LLMBackend:
        """A backend configured from settings and (validated) request options."""
        backend = cls(settings, cls.parse_options(options))  # type: ignore[arg-type]
        backend.check_options()
        return backend

    def check_options(self) -> None:  # noqa: B027 - an optional hook, not part of the contract
        """Refuse options the operator's settings do not allow (InvalidRequestError, 422): a client
        picks them, but the operator pays for them."""

    def cancel(self) -> None:  # noqa: B027 - an optional hook: a backend that cannot stop early
        """Stop a `generate` running in another thread as soon as possible (its client went away):
        it then ends by raising. Safe to call at any time, more than once; by default a no-op."""

    @abstractmethod
    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        """Yield the answer text in pieces, citing passages as [n]; raise BackendError on failure."""
