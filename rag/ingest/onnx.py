"""The standard-layout BERT encoder in ONNX Runtime, exported once from the folder's own weights.

`cached_export` writes the model of `rag.ingest.bert` (BERT, mean pooling, L2 normalisation) as an
ONNX graph with `torch.onnx`, traced from a torch module built from the folder's `model.safetensors`
(nothing downloaded, no third-party export), into a cache folder keyed by the weights' hash, the
opset and the library versions; the file is checked against torch and then moved into place, so a
reader never sees half of one. Later processes load it without importing torch at all.
`OnnxEncoder` runs such a file on the CPU: one session per thread count, as torch's intra-op threads are per
call in `rag.ingest.bert` (the query batcher runs one-thread passes side by side).

The graph is padded, not packed: ONNX has no cheap form of `bert.py`'s per-text packing, and the
padding costs little where it matters (a single query has none; a build batches texts of similar
length). The vectors equal torch's within float rounding (a test pins it over the whole corpus).
Not here: which runtime runs (`rag.ingest.embedding`, `RAG_RUNTIME`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.ingest.bert import Layout, load_tokenizer

OPSET = 17
GRAPH_VERSION = 1  # bump when `_graph` changes what it writes: the cache key then changes
TOKENS_PER_PASS = 2048  # padded tokens one pass may hold: 8 passages of 256, or 64 queries of 32


def default_threads() -> int:
    """Cores this process may use: the wide session's intra-op threads."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def cache_key(layout: Layout) -> str:
    """What the exported file depends on: the weights and config, the opset, the graph's code, and
    the exporter's and runtime's versions."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with (layout.path / name).open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    versions = "-".join(importlib.metadata.version(p) for p in ("torch", "onnxruntime"))
    return f"{digest.hexdigest()[:16]}-opset{OPSET}-g{GRAPH_VERSION}-{versions}"


def cached_export(layout: Layout, cache_dir: Path) -> Path:
    """The ONNX file of this model in `cache_dir`, exported first if it is not there yet."""
    target = cache_dir / f"{cache_key(layout)}.onnx"
    if not target.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        export(layout, target)
    return target


def _graph(layout: Layout) -> Any:
    """A torch module: (batch, seq) ids and 0/1 mask -> (batch, dim) normalised mean of the last
    layer, over padded batches, in the operations ONNX has."""
    import torch
    from safetensors.torch import load_file

    config = layout.config
    heads, layers = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
    hidden = int(config["hidden_size"])  # a constant, not a traced shape: layer_norm needs one
    eps = float(config.get("layer_norm_eps", 1e-12))
    weights = load_file(str(layout.path / "model.safetensors"))
    f = torch.nn.functional

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Checkpoints are saved with or without the "bert." prefix of BertForX heads.
            for key, value in weights.items():
                self.register_buffer(key.removeprefix("bert.").replace(".", "__"), value.float())

        def w(self, name: str) -> Any:
            return getattr(self, name.replace(".", "__"))

        def linear(self, x: Any, name: str) -> Any:
            return f.linear(x, self.w(f"{name}.weight"), self.w(f"{name}.bias"))

        def norm(self, x: Any, name: str) -> Any:
            return f.layer_norm(x, (hidden,), self.w(f"{name}.weight"), self.w(f"{name}.bias"), eps)

        def forward(self, ids: Any, mask: Any) -> Any:
            batch, seq = ids.shape
            x = (
                self.w("embeddings.word_embeddings.weight")[ids]
                + self.w("embeddings.token_type_embeddings.weight")[0]
                + self.w("embeddings.position_embeddings.weight")[torch.arange(seq)][None]
            )
            x = self.norm(x, "embeddings.LayerNorm")
            head_dim = hidden // heads
            real = mask.to(x.dtype)  # (batch, seq) 1 for a token, 0 for padding
            # Padding keys get a large negative score, so softmax gives them no weight.
            masked = (1.0 - real)[:, None, None, :] * -10000.0

            def split(t: Any) -> Any:  # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
                return t.view(batch, seq, heads, head_dim).transpose(1, 2)

            for i in range(layers):
                p = f"encoder.layer.{i}"
                q, k, v = (
                    split(self.linear(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value")
                )
                scores = torch.matmul(q, k.transpose(-1, -2)) * head_dim**-0.5 + masked
                a = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(batch, seq, hidden)
                x = self.norm(
                    self.linear(a, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm"
                )
                h = f.gelu(self.linear(x, f"{p}.intermediate.dense"))
                x = self.norm(self.linear(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
            pooled = (x * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1.0)
            return f.normalize(pooled, p=2, dim=1)

    return Graph().eval()


def export(layout: Layout, target: Path) -> None:
    """Trace the model with `torch.onnx` into `target`, written beside it and moved into place once
    ONNX Runtime's vectors for a sample equal torch's (so a cached file is always a good one)."""
    import torch

    graph = _graph(layout)
    tokenizer = load_tokenizer(layout, truncate=True)
    # Two texts of different lengths: the trace sees padding, and batch and length stay free.
    sample = tokenizer.encode_batch(["probation", "a sentence about the probation service and its officers"])
    ids = torch.tensor([e.ids for e in sample], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in sample], dtype=torch.long)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # torch 2.9+ marks the TorchScript exporter deprecated in favour of the dynamo one, which
            # needs onnxscript besides; this one is in the pinned torch and writes one plain file.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                graph,
                (ids, mask),
                str(partial),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
            expected = graph(ids, mask).numpy()
        got = _session(partial, 1).run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        if not np.allclose(got, expected, atol=1e-5):
            raise ValueError(f"exported graph differs from torch by {np.abs(got - expected).max():.2g}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers and the like are noise
    # Waiting threads sleep instead of spinning, as OMP_WAIT_POLICY=PASSIVE makes torch's do: on two
    # shared cores a spinning thread holds the core its partner needs (README, Performance).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cached_encoder(layout: Layout, cache_dir: Path) -> OnnxEncoder:
    """An encoder on this model's file in `cache_dir`, exported first if need be, and again if the
    cached file will not load (damaged on disk)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

    path = cached_export(layout, cache_dir)
    try:
        return OnnxEncoder(layout, path)
    except (Fail, InvalidGraph, InvalidProtobuf):
        export(layout, path)
        return OnnxEncoder(layout, path)


class OnnxEncoder:
    """Texts -> (n, dim) float32, L2-normalised, like `BertEncoder`, from an exported graph."""

    def __init__(self, layout: Layout, path: Path) -> None:
        self.layout = layout
        self.path = path
        self.threads = default_threads()
        self._tokenizer = load_tokenizer(layout, truncate=True)
        # Both sessions load now: a one-thread one for passes beside others, and one on every core.
        # Sessions run concurrent calls safely, each call on the calling thread plus the session's.
        self._sessions = {n: _session(path, n) for n in {1, self.threads}}

    def encode(self, texts: Sequence[str], batch_size: int = 64, threads: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32; batches of similar length. `threads`: 1 runs on the calling
        thread alone, anything else on every core (None: every core)."""
        session = self._sessions[1 if threads == 1 else self.threads]
        out = np.zeros((len(texts), self.layout.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)  # padded to the longest
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            # Attention's (rows, heads, seq, seq) scores are whole tensors here (torch's fused kernel
            # never builds them): 64 passages of 256 tokens make 200 MB a layer, and a build's texts
            # took 1.9x as long in such passes as in passes of 16 (in one process, alternating).
            # Each pass is held to TOKENS_PER_PASS padded tokens.
            step = max(1, TOKENS_PER_PASS // ids.shape[1])
            for at in range(0, len(rows), step):
                width = int(mask[at : at + step].sum(axis=1).max())  # padding is on the right
                feed = {
                    "input_ids": ids[at : at + step, :width],
                    "attention_mask": mask[at : at + step, :width],
                }
                out[rows[at : at + step]] = session.run(None, feed)[0]
        return out
