"""The bundled model in ONNX Runtime (RAG_RUNTIME=onnx) against the same model in torch: the exported
graph must give the same vectors (the runtime is a speed choice, never a quality one), be exported
once into its cache and reused, and fail with a message that names the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.errors import RagError
from rag.ingest.bert import read_layout
from rag.ingest.embedding import Embedder, resolve_model
from rag.ingest.index import Index
from rag.ingest.onnx import cache_key, cached_encoder
from rag.search.retrieval import Retriever
from rag.service import retriever_variant
from rag.settings import BUNDLED_MODEL, DEFAULT_RUNTIME, Settings
from tests.ingest.test_embedding import corpus_texts, linked_copy

# float32 rounding: the two runtimes block the same products differently (measured 2.4e-7).
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(runtime="torch")


@pytest.fixture(scope="module")
def onnx_embedder(model: Embedder) -> Embedder:
    """The session's model when it runs in ONNX Runtime, else one that does."""
    return model if model.runtime == "onnx" else Embedder(runtime="onnx")


def test_default_runtime_is_onnx_and_settings_agree() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert DEFAULT_RUNTIME == settings.runtime == "onnx"  # the measured decision (README)
    assert Embedder.from_settings(settings).runtime == "onnx"
    assert Embedder.from_settings(settings.model_copy(update={"runtime": "torch"})).runtime == "torch"


def test_onnx_vectors_equal_torch_over_the_corpus(
    onnx_embedder: Embedder, torch_embedder: Embedder, index: Index
) -> None:
    texts = corpus_texts(index)
    ours = onnx_embedder.encode(texts)
    theirs = torch_embedder.encode(texts)
    assert ours.shape == theirs.shape == (len(texts), 384) and ours.dtype == np.float32
    assert float(np.abs(ours - theirs).max()) < TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_onnx_single_query_and_small_batch_equal_torch_on_every_lane(
    onnx_embedder: Embedder, torch_embedder: Embedder, threads: int | None
) -> None:
    queries = ["why are courts sentencing without pre-sentence reports?", "Serco", "", "café 😀 中文"]
    for query in queries:
        single = onnx_embedder.encode([query], threads=threads)
        assert float(np.abs(single - torch_embedder.encode([query])).max()) < TOLERANCE, query
    batch = onnx_embedder.encode(queries, threads=threads)
    assert float(np.abs(batch - torch_embedder.encode(queries)).max()) < TOLERANCE


def test_onnx_export_is_written_once_into_its_cache_and_reused(tmp_path: Path) -> None:
    layout = read_layout(resolve_model(BUNDLED_MODEL))
    assert layout is not None
    first = cached_encoder(layout, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"{cache_key(layout)}.onnx"]  # no partial file left
    written = first.path.stat().st_mtime_ns
    second = cached_encoder(layout, tmp_path)
    assert second.path == first.path and second.path.stat().st_mtime_ns == written
    np.testing.assert_array_equal(first.encode(["pay progression"]), second.encode(["pay progression"]))


def test_onnx_cache_key_changes_with_the_weights(tmp_path: Path) -> None:
    folder = linked_copy(tmp_path, {})
    bundled, copy = read_layout(resolve_model(BUNDLED_MODEL)), read_layout(str(folder))
    assert bundled is not None and copy is not None
    assert cache_key(copy) == cache_key(bundled)  # the same bytes, wherever they are
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.unlink()
    weights.write_bytes(bytes(data))
    assert cache_key(copy) != cache_key(bundled)


def test_onnx_damaged_cache_file_is_exported_again(tmp_path: Path, torch_embedder: Embedder) -> None:
    layout = read_layout(resolve_model(BUNDLED_MODEL))
    assert layout is not None
    path = tmp_path / f"{cache_key(layout)}.onnx"
    path.write_bytes(b"half a file")
    encoder = cached_encoder(layout, tmp_path)
    assert path.stat().st_size > 1_000_000
    np.testing.assert_allclose(encoder.encode(["Serco"]), torch_embedder.encode(["Serco"]), atol=TOLERANCE)


def test_onnx_cache_that_is_a_file_is_a_rag_error_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    embedder = Embedder(runtime="onnx", cache_dir=blocker)
    with pytest.raises(RagError, match="RAG_CACHE_DIR.*RAG_RUNTIME=torch"):
        embedder.encode(["pay progression"])


def test_onnx_runtime_leaves_other_models_and_devices_to_torch(tmp_path: Path) -> None:
    folder = linked_copy(tmp_path, {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    other = Embedder(str(folder), runtime="onnx")  # sentence-transformers
    assert (other.runtime, other.runtimes) == ("torch", ("torch",))
    assert Embedder(device="meta", runtime="onnx").runtime == "torch"
    assert Embedder(runtime="torch").runtimes == ("torch", "onnx")
    assert Embedder(runtime="torch").runtime == "torch"


def test_eval_against_the_other_runtime_builds_its_own_index_and_ranks_alike(
    settings: Settings, retriever: Retriever
) -> None:
    other = "onnx" if retriever.embedder.runtime == "torch" else "torch"
    variant = retriever_variant(settings.model_copy(update={"runtime": other}), retriever)
    assert variant.embedder.runtime == other and variant.index is not retriever.index
    for query in ["Working Links collapse", "probation renationalisation", "pay progression"]:
        assert [h.chunk.id for h in variant.search(query, k=5)] == [
            h.chunk.id for h in retriever.search(query, k=5)
        ]
    same = retriever_variant(settings.model_copy(update={"dense_weight": 0.5}), retriever)
    assert same.embedder is retriever.embedder and same.index is retriever.index
