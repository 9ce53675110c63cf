"""A BERT sentence encoder in plain torch, for a sentence-transformers folder of the standard layout.

The standard layout is a BERT checkpoint (`config.json`, `model.safetensors`, `tokenizer.json`)
followed by mean pooling and L2 normalisation (`modules.json`: Transformer, Pooling, Normalize), as
all-MiniLM-L6-v2 ships. Such a model is loaded here with `tokenizers`, `safetensors` and `torch`
alone: importing sentence-transformers pulls in transformers and scikit-learn, about 7 s of a fresh
process's start on two cores, for a forward pass of a dozen tensor operations. The vectors equal
sentence-transformers' to within float32 rounding (a test pins it over the whole corpus).

`read_layout` says whether a folder qualifies; anything else (another architecture, other pooling,
a Dense layer, a model name for the hub cache) goes through sentence-transformers as before.
Not here: which model to use (`rag.ingest.embedding`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_MODULES = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]
_MEAN_ONLY = {
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}


@dataclass(frozen=True)
class Layout:
    """What a standard folder declares: enough to count tokens before any weights load."""

    path: Path
    dim: int
    max_tokens: int
    config: dict[str, Any]  # the BERT config.json


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_layout(folder: str) -> Layout | None:
    """The folder's layout when it is a plain BERT + mean pooling + normalize model, else None."""
    path = Path(folder)
    needed = (
        "modules.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "sentence_bert_config.json",
    )
    if not all((path / name).is_file() for name in needed):
        return None
    try:
        modules = _json(path / "modules.json")
        config = _json(path / "config.json")
        st_config = _json(path / "sentence_bert_config.json")
        pooling = _json(path / modules[1]["path"] / "config.json") if len(modules) > 1 else {}
        types = [m["type"] for m in modules]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    pooling_flags = {k: v for k, v in pooling.items() if k.startswith("pooling_mode")}
    if (
        types != _MODULES
        or modules[0].get("path") != ""
        or {k: pooling_flags.get(k, False) for k in _MEAN_ONLY} != _MEAN_ONLY
        or any(v for k, v in pooling_flags.items() if k not in _MEAN_ONLY)
        or pooling.get("include_prompt", True) is not True
        or config.get("model_type") != "bert"
        or config.get("hidden_act") != "gelu"
        or config.get("position_embedding_type", "absolute") != "absolute"
        or config.get("is_decoder", False)
        or st_config.get("do_lower_case", False)
        or pooling.get("word_embedding_dimension", config.get("hidden_size")) != config.get("hidden_size")
    ):
        return None
    max_tokens = min(int(st_config.get("max_seq_length") or 512), int(config["max_position_embeddings"]))
    return Layout(path, int(config["hidden_size"]), max_tokens, config)


def load_tokenizer(layout: Layout, truncate: bool) -> Any:
    """The fast tokenizer from `tokenizer.json`: unbounded for counting, else cut at the model's
    length with padding to the longest text of a batch, as sentence-transformers tokenizes."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(layout.path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if truncate:
        tokenizer.enable_truncation(max_length=layout.max_tokens)
        pad_id = int(layout.config.get("pad_token_id") or 0)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
    return tokenizer


class BertEncoder:
    """Texts -> (n, dim) float32, L2-normalised: tokenize, BERT forward, mean pooling, normalize."""

    def __init__(self, layout: Layout, device: str = "cpu") -> None:
        import torch
        from safetensors.torch import load_file

        self._torch = torch
        self.layout = layout
        self.device = torch.device(device)
        self._tokenizer = load_tokenizer(layout, truncate=True)
        config = layout.config
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        weights = load_file(str(layout.path / "model.safetensors"), device=str(self.device))
        # Checkpoints are saved with or without the "bert." prefix of BertForX heads.
        self.w = {k.removeprefix("bert."): v.float() for k, v in weights.items()}
        for i in range(self.layers):
            p = f"encoder.layer.{i}.attention.self"
            for part in ("weight", "bias"):
                self.w[f"{p}.qkv.{part}"] = self._torch.cat(
                    [self.w.pop(f"{p}.{name}.{part}") for name in ("query", "key", "value")]
                )

    def _linear(self, x: Any, name: str) -> Any:
        return self._torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _norm(self, x: Any, name: str) -> Any:
        f = self._torch.nn.functional
        return f.layer_norm(x, (x.shape[-1],), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def forward(self, ids: Any, mask: Any) -> Any:
        """(batch, seq) token ids and 0/1 mask -> (batch, dim) normalised mean of the last layer.

        Padding is dropped before the first layer: every operation but attention works token by
        token, so it runs on the real tokens alone, packed into one (tokens, hidden) matrix, and
        only attention unpacks them into (batch, seq) again. A batch of queries pads each to the
        longest (21 to 41 word pieces for the dev questions), and the padding was a quarter of a
        batch's matrix work."""
        torch, f, w = self._torch, self._torch.nn.functional, self.w
        batch, seq = ids.shape
        real = mask.bool()
        packed = None if bool(real.all()) else real.flatten().nonzero().squeeze(1)
        lengths = real.sum(1)
        positions = torch.arange(seq, device=ids.device).expand(batch, seq)
        tokens, places = ids.flatten(), positions.flatten()
        if packed is not None:
            tokens, places = tokens[packed], places[packed]
        # Token type 0 everywhere, positions 0..seq-1: what BertModel uses when given neither.
        x = w["embeddings.word_embeddings.weight"][tokens] + w["embeddings.token_type_embeddings.weight"][0]
        x = self._norm(x + w["embeddings.position_embeddings.weight"][places], "embeddings.LayerNorm")
        # Padding keys are masked out of attention; a batch without padding needs no mask at all.
        attn_mask = None if packed is None else real[:, None, None, :]
        hidden = x.shape[-1]
        head_dim = hidden // self.heads

        def heads(t: Any) -> Any:
            """(tokens, hidden) -> (batch, heads, seq, head_dim), padding positions zero."""
            if packed is not None:
                t = t.new_zeros(batch * seq, hidden).index_copy_(0, packed, t)
            return t.view(batch, seq, self.heads, head_dim).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            # One product for query, key and value (their weights stacked at load).
            q, k, v = self._linear(x, f"{p}.attention.self.qkv").split(hidden, dim=-1)
            a = f.scaled_dot_product_attention(
                heads(q), heads(k), heads(v), attn_mask=attn_mask, scale=head_dim**-0.5
            )
            a = a.transpose(1, 2).reshape(batch * seq, hidden)
            if packed is not None:
                a = a[packed]
            x = self._norm(
                self._linear(a, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm"
            )
            h = f.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(self._linear(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        # Mean over each text's own tokens: the packed rows of text b are consecutive.
        owner = torch.arange(batch, device=ids.device).repeat_interleave(lengths)
        pooled = x.new_zeros(batch, hidden).index_add_(0, owner, x) / lengths.clamp(min=1)[:, None]
        return f.normalize(pooled, p=2, dim=1)

    def encode(self, texts: Sequence[str], batch_size: int = 64, threads: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32; batches of similar length, like sentence-transformers.
        `threads`: torch's intra-op threads from this call on, in the calling thread (and, for
        MKL, the process: callers running several at once must all ask for the same)."""
        torch = self._torch
        if threads is not None:
            torch.set_num_threads(threads)
        out = np.zeros((len(texts), self.layout.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
                ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=self.device)
                mask = torch.tensor(
                    [e.attention_mask for e in encodings], dtype=torch.long, device=self.device
                )
                out[rows] = self.forward(ids, mask).cpu().numpy()
        return out
