"""The container image, read from the Dockerfile (no Docker here to build it): it runs as an
unprivileged user that owns the index it builds, keeps its health check, bakes in no secrets, and
its documented `docker run` passes API keys (it binds 0.0.0.0, where `rag serve` requires them)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_container_runs_as_an_unprivileged_user() -> None:
    steps = _instructions()
    users = [(i, args) for i, (word, args) in enumerate(steps) if word == "USER"]
    assert users, "the image must switch away from root"
    last, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    created = next(args for word, args in steps if word == "RUN" and "useradd" in args)
    assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", created)
    assert "--uid 0" not in created and "--non-unique" not in created
    assert last < next(i for i, (word, _) in enumerate(steps) if word == "CMD")


def test_container_index_is_built_by_and_owned_by_that_user() -> None:
    steps = _instructions()
    user_at = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    ingest_at = next(i for i, (word, args) in enumerate(steps) if word == "RUN" and "rag ingest" in args)
    assert ingest_at > user_at, "the index is written by the unprivileged user, so it can rebuild it"
    assert any(word == "RUN" and "chown rag:rag /app/index" in args for word, args in steps)


def test_container_keeps_its_health_check_on_readyz() -> None:
    (check,) = [args for word, args in _instructions() if word == "HEALTHCHECK"]
    assert "/readyz" in check and "127.0.0.1:8000" in check


def test_container_bakes_in_no_secrets() -> None:
    secretish = re.compile(r"(^|_)(KEYS?|TOKENS?|SECRET|PASSWORD)(_|$)", re.I)
    for word, args in _instructions():
        if word in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not [n for n in names if secretish.search(n)], args
        if word in ("COPY", "ADD"):
            sources = args.split()[:-1]
            assert set(sources) <= {"pyproject.toml", "README.md", "rag", "api", "data"}, args


def test_container_docs_pass_api_keys_at_run_time() -> None:
    for text in (DOCKERFILE, README):
        assert re.search(r"docker run .*-e RAG_API_KEYS=", text), "the documented run command passes keys"
