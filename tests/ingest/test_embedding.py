"""The Embedder against sentence-transformers itself: the plain-torch path for the bundled model
must give the same vectors and token counts, and load its weights only when something is encoded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.errors import RagError
from rag.ingest.bert import read_layout
from rag.ingest.embedding import Embedder, resolve_model
from rag.ingest.index import Index
from rag.settings import BUNDLED_MODEL

EDGE_TEXTS = [
    "",
    "   ",
    "  leading and trailing spaces  ",
    "café naïve Ünïcode — “curly quotes” and ‘single’ ones",
    "emoji 😀 and CJK 中文字符",
    "a very long text " * 200,  # far past the model's 256 tokens: truncated alike
    "why are courts sentencing without pre-sentence reports?",
]


@pytest.fixture(scope="module")
def reference() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(BUNDLED_MODEL), device="cpu")


def corpus_texts(index: Index) -> list[str]:
    return [c.embed_text for c in index.chunks] + [s.embed_text for s in index.sentences] + EDGE_TEXTS


def test_bundled_model_takes_the_plain_torch_path() -> None:
    layout = read_layout(resolve_model(BUNDLED_MODEL))
    assert layout is not None
    assert (layout.dim, layout.max_tokens) == (384, 256)


def test_embedder_vectors_equal_sentence_transformers_over_the_corpus(
    embedder: Embedder, reference: Any, index: Index
) -> None:
    texts = corpus_texts(index)
    ours = embedder.encode(texts)
    theirs = reference.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert ours.dtype == np.float32
    assert float(np.abs(ours - theirs).max()) < 1e-6
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_embedder_single_query_vector_equals_sentence_transformers(
    embedder: Embedder, reference: Any
) -> None:
    for text in EDGE_TEXTS:
        ours = embedder.encode([text])
        theirs = reference.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        assert float(np.abs(ours - theirs).max()) < 1e-6, text


def test_embedder_token_counts_equal_sentence_transformers(
    embedder: Embedder, reference: Any, index: Index
) -> None:
    texts = corpus_texts(index)
    ours = [embedder.count_tokens(t) for t in texts]
    theirs = [len(reference.tokenizer(t, add_special_tokens=True, verbose=False)["input_ids"]) for t in texts]
    assert ours == theirs
    assert any(n > embedder.max_tokens for n in ours)  # the long text is counted, not truncated
    assert [embedder.fits(t) for t in texts] == [n <= 256 for n in theirs]


def test_embedder_counts_tokens_without_loading_the_weights() -> None:
    fresh = Embedder()
    assert fresh.count_tokens("pay progression") == 4  # [CLS] pay progression [SEP]
    assert fresh.fits("pay progression")
    assert not fresh.loaded


def test_embedder_loads_on_first_encode_and_shares_the_load_with_its_copies(embedder: Embedder) -> None:
    fresh = Embedder()
    copy = Embedder.from_loaded(fresh)
    vector = copy.encode(["Serco contracts"])
    assert fresh.loaded and copy.loaded
    np.testing.assert_allclose(vector, embedder.encode(["Serco contracts"]), atol=1e-6)


def test_embedder_preload_loads_in_the_background_and_encode_waits_for_it(embedder: Embedder) -> None:
    fresh = Embedder()
    fresh.preload()
    fresh.preload()  # a second call neither loads twice nor fails
    vector = fresh.encode(["probation privatisation failed"])
    assert fresh.loaded
    np.testing.assert_allclose(vector, embedder.encode(["probation privatisation failed"]), atol=1e-6)


def linked_copy(tmp_path: Path, pooling: dict[str, bool]) -> Path:
    """The bundled folder with other pooling: links to the weights, copies of the small files."""
    source = Path(resolve_model(BUNDLED_MODEL))
    folder = tmp_path / "model"
    shutil.copytree(source, folder, copy_function=lambda s, d: Path(d).symlink_to(s))
    config = folder / "1_Pooling" / "config.json"
    values = {**json.loads(config.read_text()), **pooling}
    config.unlink()
    config.write_text(json.dumps(values))
    return folder


def test_embedder_other_pooling_goes_through_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = linked_copy(tmp_path, {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    assert read_layout(str(folder)) is None
    embedder = Embedder(str(folder))
    assert embedder.loaded  # loaded at once, as sentence-transformers does
    texts = ["pay progression", "Serco contracts"]
    expected = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.encode(texts), expected, atol=1e-6)
    assert embedder.count_tokens("pay progression") == 4


def test_embedder_unknown_model_is_a_rag_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RagError, match="no-such-model"):
        Embedder(str(tmp_path / "no-such-model"))


def test_read_layout_refuses_a_folder_missing_its_weights(tmp_path: Path) -> None:
    folder = linked_copy(tmp_path, {})
    assert read_layout(str(folder)) is not None
    (folder / "model.safetensors").unlink()
    assert read_layout(str(folder)) is None
