"""Build, save and load the search index: chunk store, FAISS vectors and a manifest.

On disk (``index_dir``)::

    current -> build-<fingerprint>/     symlink, swapped atomically once a build is complete
    build-<fingerprint>/
        manifest.json    format version, model, dim, similarity, chunking, corpus fingerprint,
                         library versions, and a sha256 of every file below
        documents.json   parsed posts (raw text, nodes) so passages resolve without data/
        chunks.jsonl     one Chunk per line, with `dup_of` for repeated passages
        chunks.npy       (n_chunks, dim) float32, L2-normalised, inner product
        chunks.ivf       FAISS IVF index over chunks.npy, only past `vectors.EXACT_BELOW` chunks
        sentences.json   sentence spans and the chunk each belongs to
        sentences.npy    (n_sentences, dim) float32, L2-normalised, inner product
        sentences.ivf    as chunks.ivf, for the sentences
        bm25/            BM25 over the chunks: score matrix (.npy), vocabulary, parameters

The vector files (`rag.ingest.vectors`, which also chooses between exact and IVF search and
records the choice in the manifest's ``vector_index``) and the BM25 score matrix (`rag.ingest.bm25`,
built here rather than by every process that loads) of a large index are memory-mapped at load, so
worker processes share one copy through the page cache; those of an index up to `MAP_ABOVE` bytes
are read into memory. A mapped file cut short on disk kills the process that reads past its new
end (SIGBUS), which a copy in memory cannot suffer. So a finished build's files are read-only, and
`DiskWatch` lets a server notice a file changed in place anyway (api/loader.py).

A crash mid-build leaves at worst an orphan ``build-*`` folder; ``current`` only ever points at a
complete build, and the loader verifies checksums, so a half-written or tampered index never loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexIncompatibleError, IndexNotBuiltError, IndexWriteError, NotFoundError, echoed
from rag.ingest import vectors
from rag.ingest.bm25 import BM25Index
from rag.ingest.chunking import ENCODING, PARENT_WORDS, Chunk, chunk_corpus, chunk_document
from rag.ingest.corpus import Corpus, Document, Node, load_corpus
from rag.ingest.embedding import Embedder
from rag.ingest.incremental import VectorCache, changes
from rag.ingest.sentences import Sentence, split_sentences
from rag.ingest.vectors import VectorIndex
from rag.search.dedup import duplicate_of

logger = logging.getLogger(__name__)

# 2: replies embed the opening words of their parent comment; 3: links left out of those words;
# 4: nodes carry a content hash; 5: vectors as memory-mappable .npy (+ .ivf past a size) instead
# of flat .faiss files; 6: BM25 built at ingest and saved (bm25/) instead of at every load;
# 7: chunks packed from whole sentences to fit the model, never cut inside a word
FORMAT_VERSION = 7
_FILES = ("documents.json", "chunks.jsonl", "sentences.json")
_SELF_DIGEST = "manifest_sha256"
_MAPPABLE = (".npy", ".ivf")  # vectors, IVF lists, BM25 arrays: what a large index maps
# Vector, IVF and BM25 files totalling more than this are memory-mapped at load; less is read into
# memory. Chosen by measurement (README, The index on disk).
MAP_ABOVE = 256 * 2**20


@dataclass(frozen=True)
class IndexConfig:
    """What an index depends on besides the corpus; a mismatch makes an index stale."""

    model: str
    chunk_size: int
    chunk_overlap: int


@dataclass
class Index:
    """A loaded index: everything retrieval needs, in memory."""

    manifest: dict[str, Any]
    documents: dict[str, Document]
    chunks: list[Chunk]
    dup_of: list[int | None]  # for each chunk, the earlier chunk it repeats, or None
    sentences: list[Sentence]
    chunk_search: VectorIndex = field(repr=False)  # top-k over the chunk vectors
    sentence_search: VectorIndex = field(repr=False)  # top-k over the sentence vectors
    bm25: BM25Index = field(repr=False)  # BM25 scores over the chunks
    mapped: bool = False  # vector, IVF and BM25 files memory-mapped (else in memory)
    disk: DiskWatch | None = field(default=None, repr=False)  # the files it was loaded from
    by_id: dict[str, int] = field(init=False, repr=False)
    titles: dict[str, str] = field(init=False, repr=False)  # each post's title, by post id

    def __post_init__(self) -> None:
        self.by_id = {c.id: i for i, c in enumerate(self.chunks)}
        self.titles = {d.id: d.title for d in self.documents.values()}

    @property
    def vectors(self) -> np.ndarray:
        """(n_chunks, dim) float32, L2-normalised; memory-mapped when loaded from disk."""
        return self.chunk_search.matrix

    @property
    def sentence_vectors(self) -> np.ndarray:
        """(n_sentences, dim) float32, L2-normalised; memory-mapped when loaded from disk."""
        return self.sentence_search.matrix

    def chunk(self, chunk_id: str) -> Chunk:
        try:
            return self.chunks[self.by_id[chunk_id]]
        except KeyError:
            raise NotFoundError(f"no passage with id {echoed(chunk_id)} in the index") from None

    def document(self, document_id: str) -> Document:
        try:
            return self.documents[document_id]
        except KeyError:
            known = ", ".join(sorted(self.documents)[:10])
            raise NotFoundError(
                f"no document with id {echoed(document_id)}; known ids include: {known}"
            ) from None


# ---------------------------------------------------------------- building


def _versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "rag-archive",
        "sentence-transformers",
        "faiss-cpu",
        "torch",
        "onnxruntime",
        "tiktoken",
        "bm25s",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def describe(
    config: IndexConfig,
    dim: int,
    corpus: Corpus,
    chunks: list[Chunk],
    sentences: list[Sentence],
    chunk_search: VectorIndex,
    sentence_search: VectorIndex,
) -> dict[str, Any]:
    """The manifest fields every build records: what it was built from, with what, and how its
    vectors are searched. (`build` adds the model's token limit and how the build came about.)"""
    return {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": config.model,
        "dimension": dim,
        "normalized": True,
        "similarity": "inner_product",
        "chunking": {
            "size": config.chunk_size,
            "overlap": config.chunk_overlap,
            "encoding": ENCODING,
            "parent_words": PARENT_WORDS,
        },
        "corpus_fingerprint": corpus.fingerprint,
        "documents": len(corpus.documents),
        "chunks": len(chunks),
        "sentences": len(sentences),
        "vector_index": {"chunks": chunk_search.spec, "sentences": sentence_search.spec},
        "versions": _versions(),
    }


def _reusable(previous: Index | None, config: IndexConfig, dim: int) -> Index | None:
    """`previous` when its vectors are what this build would compute (same model and chunking)."""
    if previous is None:
        return None
    try:
        check_compatible(previous.manifest, config, None)
    except IndexIncompatibleError as exc:
        logger.info("not reusing the previous build's vectors: %s", exc)
        return None
    return previous if previous.manifest.get("dimension") == dim else None


def _encode_missing(
    texts: list[str],
    rows: list[int],
    out: np.ndarray,
    embedder: Embedder,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Encode `texts[rows]` into `out[rows]`; a text that occurs twice (a one-sentence comment
    is both a chunk and a sentence) is encoded once."""
    unique = list(dict.fromkeys(texts[i] for i in rows))
    if not unique:
        return
    encoded = np.zeros((len(unique), embedder.dim), dtype=np.float32)
    # Batches of similar length waste little on padding: sorting the whole corpus by length once, rather
    # than letting the encoder sort within each progress batch, cut embedding time by a third.
    order = sorted(range(len(unique)), key=lambda i: len(unique[i]), reverse=True)
    batch = 64
    if progress:  # the bar shows while the first batch waits for the model to finish loading
        progress("embedding", 0, len(unique))
    for i in range(0, len(order), batch):
        some = order[i : i + batch]
        encoded[some] = embedder.encode([unique[j] for j in some], batch_size=batch)
        if progress:
            progress("embedding", min(i + batch, len(unique)), len(unique))
    position = {text: i for i, text in enumerate(unique)}
    out[rows] = encoded[[position[texts[i]] for i in rows]]


def _chunk(corpus: Corpus, config: IndexConfig, embedder: Embedder, base: Index | None) -> list[Chunk]:
    """The corpus's chunks. A post whose file is byte for byte the one `base` chunked (same source,
    same text) keeps base's chunks, which chunking it again would give (same text, size and
    tokenizer): an ingest of one new post then chunks that post, not the whole archive, whose cost
    grows with it (counting word pieces is most of chunking)."""
    if base is None:
        return chunk_corpus(corpus.documents, config.chunk_size, config.chunk_overlap, embedder.fits)
    kept: dict[str, list[Chunk]] = {}
    for chunk in base.chunks:
        kept.setdefault(chunk.document_id, []).append(chunk)
    chunks: list[Chunk] = []
    for doc in corpus.documents:
        old = base.documents.get(doc.id)
        if old is not None and old.raw == doc.raw and old.source == doc.source and doc.id in kept:
            chunks.extend(kept[doc.id])
        else:
            chunks.extend(chunk_document(doc, config.chunk_size, config.chunk_overlap, embedder.fits))
    return chunks


def build(
    corpus: Corpus,
    embedder: Embedder,
    config: IndexConfig,
    progress: Callable[[str, int, int], None] | None = None,
    previous: Index | None = None,
) -> Index:
    """Chunk, embed and index a parsed corpus in memory (see `save` to persist it).

    With `previous` (an index built with the same model and chunking), texts it already embedded
    take their vectors from it and only the rest are encoded; the result is the same index.
    """
    base = _reusable(previous, config, embedder.dim)
    if base is None and corpus.documents:
        # Everything is to encode: the model loads in the background while the corpus is chunked
        # (which needs only its tokenizer). A build reusing vectors loads it only if some are new.
        embedder.preload()
    chunks = _chunk(corpus, config, embedder, base)
    sentences = split_sentences(corpus.documents, chunks)
    texts = [c.embed_text for c in chunks] + [s.embed_text for s in sentences]
    embedded = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    todo = list(range(len(texts)))
    if base is not None:
        cache = VectorCache()
        cache.add((c.embed_text for c in base.chunks), base.vectors)
        cache.add((s.embed_text for s in base.sentences), base.sentence_vectors)
        todo = cache.fill(texts, embedded)
    _encode_missing(texts, todo, embedded, embedder, progress)
    chunk_search = vectors.build(embedded[: len(chunks)])
    sentence_search = vectors.build(embedded[len(chunks) :])
    manifest = {
        **describe(config, embedder.dim, corpus, chunks, sentences, chunk_search, sentence_search),
        "max_model_tokens": embedder.max_tokens,
        # How this build came about: what it reused from which build, and what changed since.
        "incremental": {
            "base": base.manifest.get("build") if base else None,
            "encoded": len(todo),
            "reused": len(texts) - len(todo),
            "changes": asdict(changes(list(base.documents.values()), corpus.documents)) if base else None,
        },
    }
    return Index(
        manifest=manifest,
        documents={d.id: d for d in corpus.documents},
        chunks=chunks,
        dup_of=duplicate_of([c.text for c in chunks]),
        sentences=sentences,
        chunk_search=chunk_search,
        sentence_search=sentence_search,
        bm25=BM25Index.build(chunks),
    )


# ---------------------------------------------------------------- saving


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """The manifest's own checksum (over its other keys): a flipped byte in a count or the dimension
    would otherwise load unnoticed, as the manifest holds the other files' checksums but not its own."""
    rest = {k: v for k, v in manifest.items() if k != _SELF_DIGEST}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def _doc_to_json(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "source": doc.source,
        "title": doc.title,
        "date": doc.date,
        "raw": doc.raw,
        "declared_count": doc.declared_count,
        "nodes": [asdict(n) for n in doc.nodes],
    }


def _doc_from_json(data: dict[str, Any]) -> Document:
    doc = Document(
        id=data["id"],
        source=data["source"],
        title=data["title"],
        date=data["date"],
        raw=data["raw"],
        declared_count=data["declared_count"],
    )
    doc.nodes = [Node(**n) for n in data["nodes"]]
    return doc


def save(index: Index, index_dir: Path) -> Path:
    """Write `index` under `index_dir` and point `current` at it, atomically. A failed write (disk
    full, file too large, permissions) raises IndexWriteError and leaves the previous index as it was."""
    build_dir = index_dir / f"build-{index.manifest['corpus_fingerprint'][:12]}-{uuid.uuid4().hex[:8]}"
    previous = current_build(index_dir)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        build_dir.mkdir()
        (build_dir / "documents.json").write_text(
            json.dumps([_doc_to_json(d) for d in index.documents.values()], ensure_ascii=False),
            encoding="utf-8",
        )
        with (build_dir / "chunks.jsonl").open("w", encoding="utf-8") as fh:
            for chunk, dup in zip(index.chunks, index.dup_of, strict=True):
                fh.write(json.dumps({**chunk.to_dict(), "dup_of": dup}, ensure_ascii=False) + "\n")
        (build_dir / "sentences.json").write_text(
            json.dumps([asdict(s) for s in index.sentences], ensure_ascii=False), encoding="utf-8"
        )
        written = [
            *vectors.save(index.chunk_search, build_dir, "chunks"),
            *vectors.save(index.sentence_search, build_dir, "sentences"),
            *index.bm25.save(build_dir),
        ]
        files = {f: _sha256(build_dir / f) for f in (*_FILES, *written)}
        manifest = {**index.manifest, "build": build_dir.name, "files": files}
        manifest[_SELF_DIGEST] = _manifest_digest(manifest)
        # The manifest goes last: a build without one is never loaded.
        (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _read_only(build_dir)
        index.manifest = manifest
        _swap_current(index_dir, build_dir)
    except OSError as exc:
        shutil.rmtree(build_dir, ignore_errors=True)
        reason = exc.strerror or str(exc)
        raise IndexWriteError(
            f"could not write the index to {index_dir}/ ({reason}); the previous index is kept"
        ) from exc
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    # The build `current` pointed at stays until the next build: a server may be loading it right now.
    _remove_old_builds(index_dir, keep={build_dir.name, previous} - {None})
    return build_dir


def _read_only(build_dir: Path) -> None:
    """Make a finished build's files read-only (0444): a published build never changes, and a tool
    that would write into a file a server has mapped (`cp` or `rsync --inplace` over it, `truncate`)
    then fails with "Permission denied" instead of cutting the file under the server. Root, or an
    owner who first makes a file writable again, is not stopped: see `DiskWatch`. The folder stays
    writable, so old builds can still be removed."""
    for path in build_dir.rglob("*"):
        if path.is_file():
            try:
                path.chmod(0o444)
            except OSError as exc:  # a filesystem without modes: the build is still whole
                logger.warning("could not make %s read-only: %s", path, exc)


def current_build(index_dir: Path) -> str | None:
    """The folder name `current` points at, or None when there is no index."""
    try:
        return os.readlink(index_dir / "current")
    except OSError:
        return None


def _swap_current(index_dir: Path, build_dir: Path) -> None:
    tmp_link = index_dir / f".current-{uuid.uuid4().hex[:8]}"
    tmp_link.symlink_to(build_dir.name)
    os.replace(tmp_link, index_dir / "current")  # rename(2) is atomic


def _remove_old_builds(index_dir: Path, keep: set[str | None]) -> None:
    for path in index_dir.glob("build-*"):
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- loading


def read_manifest(index_dir: Path, build_dir: Path | None = None) -> dict[str, Any]:
    """The manifest of the build `current` points at (or of `build_dir`)."""
    current = build_dir or index_dir / "current"
    manifest_path = current / "manifest.json"
    if not current.exists():
        raise IndexNotBuiltError(f"no index in {index_dir}/: run `rag ingest` to build one")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexIncompatibleError(
            f"index in {index_dir}/ is corrupt (manifest unreadable: {exc}); run `rag ingest`"
        ) from exc
    # Indexes written before the manifest carried its own checksum have none; any written since must match.
    digest = manifest.get(_SELF_DIGEST) if isinstance(manifest, dict) else ""
    if not isinstance(manifest, dict) or (digest is not None and digest != _manifest_digest(manifest)):
        raise IndexIncompatibleError(
            f"index in {index_dir}/ is corrupt (manifest.json does not match its checksum); run `rag ingest`"
        )
    return manifest


def check_compatible(manifest: dict[str, Any], config: IndexConfig, fingerprint: str | None) -> None:
    """Raise IndexIncompatibleError naming what differs between the index and the settings."""
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        logger.warning("index was written by a newer version (format %s > %s)", version, FORMAT_VERSION)
    problems = []
    if version != FORMAT_VERSION:
        problems.append(f"format version {version} (this code reads {FORMAT_VERSION})")
    if manifest.get("model") != config.model:
        problems.append(f"model {manifest.get('model')!r} (settings: {config.model!r})")
    chunking = manifest.get("chunking", {})
    if (chunking.get("size"), chunking.get("overlap"), chunking.get("parent_words")) != (
        config.chunk_size,
        config.chunk_overlap,
        PARENT_WORDS,
    ):
        problems.append(
            f"chunking size/overlap/parent words {chunking.get('size')}/{chunking.get('overlap')}/"
            f"{chunking.get('parent_words')} (now: {config.chunk_size}/{config.chunk_overlap}/{PARENT_WORDS})"
        )
    if fingerprint is not None and manifest.get("corpus_fingerprint") != fingerprint:
        problems.append("corpus changed since the index was built")
    if problems:
        raise IndexIncompatibleError(
            "index is stale: " + "; ".join(problems) + ". Run `rag ingest` to rebuild it."
        )


def load(index_dir: Path, map_above: int = MAP_ABOVE) -> Index:
    """Load the index `current` points at, verifying every file against the manifest. Its vector,
    IVF and BM25 files are memory-mapped when they total over `map_above` bytes, else read into
    memory (see the module docstring)."""
    # Resolved once: `current` may be swapped to a newer build while this one loads.
    root = (index_dir / "current").resolve()
    manifest = read_manifest(index_dir, root)
    with _corrupt_as_incompatible(index_dir):
        # Seen before the checksums are read: a change from here on is either caught by them or
        # reported by `DiskWatch.changed` later.
        watch = DiskWatch(root, [name for name in manifest["files"] if name.endswith(_MAPPABLE)])
        mapped = watch.total_bytes() > map_above
        for name, digest in manifest["files"].items():
            if _sha256(root / name) != digest:
                raise IndexIncompatibleError(
                    f"index file {name} does not match its manifest checksum; run `rag ingest`"
                )
        documents = [
            _doc_from_json(d) for d in json.loads((root / "documents.json").read_text(encoding="utf-8"))
        ]
        rows = [json.loads(line) for line in (root / "chunks.jsonl").open(encoding="utf-8")]
        dup_of = [row.pop("dup_of") for row in rows]
        chunks = [Chunk(**row) for row in rows]
        sentences = [Sentence(**s) for s in json.loads((root / "sentences.json").read_text(encoding="utf-8"))]
        specs = manifest["vector_index"]
        chunk_search = vectors.load(root, "chunks", specs["chunks"], mapped)
        sentence_search = vectors.load(root, "sentences", specs["sentences"], mapped)
        if chunk_search.ntotal != len(chunks) or sentence_search.ntotal != len(sentences):
            raise IndexIncompatibleError("index vectors and chunk store disagree; run `rag ingest`")
        bm25 = BM25Index.load(root, len(chunks), mapped)
        return Index(
            manifest=manifest,
            documents={d.id: d for d in documents},
            chunks=chunks,
            dup_of=dup_of,
            sentences=sentences,
            chunk_search=chunk_search,
            sentence_search=sentence_search,
            bm25=bm25,
            mapped=mapped,
            disk=watch,
        )


class DiskWatch:
    """The files an index was loaded from, as `stat` saw them then. `changed()` names those since
    changed in place (the same inode with another size or modification time: a `truncate`, a `cp`
    or `rsync --inplace` over it) and takes their new state as seen, so each change is reported
    once. A file replaced by a rename, or removed, is no change here: what the server holds (its
    mapping or its copy in memory) still reads the old inode, which the filesystem keeps."""

    def __init__(self, root: Path, names: Iterable[str]) -> None:
        self.root = root
        self._seen = {name: _stat(root / name) for name in names}

    def total_bytes(self) -> int:
        return sum(seen[2] for seen in self._seen.values() if seen is not None)

    def changed(self) -> list[str]:
        found = []
        for name, seen in self._seen.items():
            now = _stat(self.root / name)
            if seen is not None and now is not None and now[:2] == seen[:2] and now != seen:
                found.append(name)
                self._seen[name] = now
        return found


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, modification time in ns), or None when the file cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def _corrupt_as_incompatible(index_dir: Path) -> Iterator[None]:
    """Translate whatever a damaged file raises (JSON, FAISS, missing keys) into our error."""
    try:
        yield
    except IndexIncompatibleError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise IndexIncompatibleError(
            f"index in {index_dir}/ is corrupt ({type(exc).__name__}: {exc}); run `rag ingest`"
        ) from exc


def build_and_save(
    data_dir: Path,
    index_dir: Path,
    embedder: Embedder,
    config: IndexConfig,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Index, Corpus]:
    """Parse `data_dir`, build the index and persist it. Returns the index and the parse report."""
    corpus = load_corpus(data_dir)
    index = build(corpus, embedder, config, progress)
    save(index, index_dir)
    return index, corpus
