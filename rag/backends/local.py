"""The local backend: a chat model run in this process from a file on disk, no server needed.

``RAG_LOCAL_MODEL_PATH`` names either a GGUF file (loaded and de-quantised by transformers,
which needs the optional ``gguf`` and ``accelerate`` packages: ``pip install 'rag-archive[local]'``)
or a transformers model folder. The model must have a chat template. Loading happens on first
use and is cached per path, so one process holds one copy.

Generation is greedy and bounded by ``max_new_tokens``; text is streamed as it is produced
(transformers' `TextIteratorStreamer`, generation in a worker thread) and the call gives up
after ``RAG_LLM_TIMEOUT`` seconds (a stopping criterion checked after every token) or when
`cancel` is called. Special-token strings in the messages' text are neutralised before the
chat template runs, so retrieved text cannot forge a turn. Missing packages, an unreadable file
or a failed generation leave as `BackendError` with what to install or check.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field

from rag.answer.prompting import Prompt, Source, defang
from rag.backends.base import LLMBackend
from rag.errors import BackendError, InvalidRequestError
from rag.settings import Settings


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


@lru_cache(maxsize=2)
def special_tokens(path: str) -> re.Pattern[str] | None:
    """Every token string the model's tokenizer matches whole (its special and added tokens), longest
    first; None when it declares none."""
    tokenizer, _ = load_model(path)
    strings = set(getattr(tokenizer, "all_special_tokens", []))
    strings |= {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    strings = {s for s in strings if s.strip()}
    if not strings:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(strings, key=len, reverse=True)))


def neutralise(text: str, pattern: re.Pattern[str] | None) -> str:
    """`text` with every special-token string in it defanged, so tokenizing it cannot yield one.

    The chat template's own markers must stay special, so the rendered prompt is tokenized with
    special tokens parsed; what keeps a passage from forging a turn is that none survive in it.
    """
    return pattern.sub(lambda m: defang(m.group(0)), text) if pattern else text


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

    def __init__(self, settings: Settings, options: LLMBackend.Options | None = None) -> None:
        super().__init__(settings, options)
        self._cancelled = threading.Event()

    def check_options(self) -> None:
        limit = self.settings.max_tokens
        if self.options.max_new_tokens > limit:
            if "max_new_tokens" in self.options.model_fields_set:
                raise InvalidRequestError(
                    f"options.max_new_tokens: {self.options.max_new_tokens} is over the limit of "
                    f"{limit} (RAG_MAX_TOKENS)"
                )
            self.options.max_new_tokens = limit

    def cancel(self) -> None:
        self._cancelled.set()

    def _path(self) -> str:
        path = self.settings.local_model_path
        if not path:
            raise BackendError(
                "the local backend needs RAG_LOCAL_MODEL_PATH (a .gguf file or a model folder)"
            )
        return path

    def encode(self, prompt: Prompt) -> Any:
        """The prompt as the model's input ids (and attention mask), special tokens in the messages'
        text neutralised first: a passage holding `<|im_start|>system` must not open a turn."""
        path = self._path()
        tokenizer, _ = load_model(path)
        pattern = special_tokens(path)
        messages = [{**m, "content": neutralise(m["content"], pattern)} for m in prompt.messages]
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        deadline = self.call_deadline()
        tokenizer, model = load_model(self._path())
        inputs = self.encode(prompt)
        streamer: Any = TextIteratorStreamer(
            tokenizer,
            skip_prompt=True,
            skip_special_tokens=True,
            timeout=max(0.001, deadline - time.monotonic()),
        )
        stop, cancelled = threading.Event(), self._cancelled
        failure: list[BaseException] = []

        def run() -> None:
            from transformers import StoppingCriteria, StoppingCriteriaList

            class Deadline(StoppingCriteria):
                def __call__(self, *args: Any, **kwargs: Any) -> bool:
                    return stop.is_set() or cancelled.is_set() or time.monotonic() > deadline

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
        if cancelled.is_set():
            raise BackendError("cancelled before it finished")
        if failure:
            raise BackendError(f"the local model failed: {type(failure[0]).__name__}: {failure[0]}")
        if time.monotonic() > deadline:
            raise BackendError(f"the local model ran past RAG_LLM_TIMEOUT ({self.settings.llm_timeout:g}s)")
