"""The local backend: a chat model run in this process from a file on disk, no server needed.

``RAG_LOCAL_MODEL_PATH`` names either a GGUF file (loaded and de-quantised by transformers,
which needs the optional ``gguf`` and ``accelerate`` packages: ``pip install 'rag-archive[local]'``)
or a transformers model folder. The model must have a chat template. Loading happens on first
use and is cached per path, so one process holds one copy.

Generation is greedy and bounded by ``max_new_tokens``; text is streamed as it is produced
(transformers' `TextIteratorStreamer`, generation in a worker thread) and the call gives up
after ``RAG_LLM_TIMEOUT`` seconds. Missing packages, an unreadable file or a failed generation
leave as `BackendError` with what to install or check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field

from rag.answer.prompting import Prompt, Source
from rag.backends.base import LLMBackend
from rag.errors import BackendError


@lru_cache(maxsize=2)
def load_model(path: str) -> tuple[Any, Any]:
    """(tokenizer, model) for a GGUF file or a transformers folder, loaded once per path."""
    target = Path(path).expanduser()
    if not target.exists():
        raise BackendError(f"RAG_LOCAL_MODEL_PATH: {target} does not exist (a .gguf file or a model folder)")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers comes with sentence-transformers
        raise BackendError("the local backend needs transformers: pip install 'rag-archive[local]'") from exc
    try:
        if target.is_file():
            kwargs = {"gguf_file": target.name}
            tokenizer = AutoTokenizer.from_pretrained(str(target.parent), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(target.parent), **kwargs)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(target))
            model = AutoModelForCausalLM.from_pretrained(str(target))
    except ImportError as exc:
        raise BackendError(
            f"loading {target.name} needs an optional package ({exc}); "
            "install them with: pip install 'rag-archive[local]'"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackendError(f"could not load the local model {target}: {exc}") from exc
    model.eval()  # type: ignore[no-untyped-call]
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(f"the local model {target} has no chat template; use an instruct/chat model")
    return tokenizer, model


class LocalBackend(LLMBackend):
    """A chat model (GGUF file or transformers folder) run in-process with transformers."""

    name = "local"
    aliases = ("transformers", "gguf")
    supports_streaming = True

    class Options(LLMBackend.Options):
        max_new_tokens: int = Field(160, ge=1, le=2048, description="Most tokens generated.")
        # No `path` here: a model path from a request would let any client make the server open
        # files of its choosing. The model is the operator's choice, RAG_LOCAL_MODEL_PATH.

    options: Options

    def _path(self) -> str:
        path = self.settings.local_model_path
        if not path:
            raise BackendError(
                "the local backend needs RAG_LOCAL_MODEL_PATH (a .gguf file or a model folder)"
            )
        return path

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        tokenizer, model = load_model(self._path())
        deadline = time.monotonic() + self.settings.llm_timeout
        inputs = tokenizer.apply_chat_template(
            prompt.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer: Any = TextIteratorStreamer(
            tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.settings.llm_timeout
        )
        stop = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            from transformers import StoppingCriteria, StoppingCriteriaList

            class Deadline(StoppingCriteria):
                def __call__(self, *args: Any, **kwargs: Any) -> bool:
                    return stop.is_set() or time.monotonic() > deadline

            try:
                model.generate(
                    **inputs,
                    max_new_tokens=self.options.max_new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([Deadline()]),
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
            except Exception as exc:  # noqa: BLE001 - reported to the caller below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="local-llm", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield text
        except Exception as exc:  # the streamer's queue timed out
            raise BackendError(
                f"the local model produced nothing for {self.settings.llm_timeout:g}s"
            ) from exc
        finally:
            stop.set()
        worker.join(timeout=5)
        if failure:
            raise BackendError(f"the local model failed: {type(failure[0]).__name__}: {failure[0]}")
        if time.monotonic() > deadline:
            raise BackendError(f"the local model ran past RAG_LLM_TIMEOUT ({self.settings.llm_timeout:g}s)")
