"""rag/backends/__init__.py and base.py: the registry, aliases, entry points and strict options."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest

from rag.answer.prompting import Prompt, Source
from rag.backends import BUILTINS, Registry, create_backend, get_backend, load_registry, register, unregister
from rag.backends.base import LLMBackend
from rag.backends.extractive import ExtractiveBackend
from rag.backends.local import LocalBackend
from rag.backends.openai import OpenAIBackend
from rag.errors import InvalidRequestError, UnknownBackendError
from rag.settings import Settings
from tests.scripted import ScriptedBackend, scripted_fixture  # noqa: F401


class EchoBackend(LLMBackend):
    """A third-party style backend, loaded through an entry point in these tests."""

    name = "echo"
    aliases = ("parrot",)

    def generate(self, prompt: Prompt, passages: Sequence[Source]) -> Iterator[str]:
        yield f"{prompt.question} [1]"


class NotABackend:
    pass


def ep(name: str, ref: str) -> EntryPoint:
    return EntryPoint(name, ref, "rag.backends")


ECHO = ep("echo", "tests.backends.test_backends:EchoBackend")


def test_registry_loads_entry_points_with_aliases() -> None:
    registry = Registry()
    registry.load(eps=[ECHO])
    assert registry.names() == ["echo"]
    assert registry.get("echo") is EchoBackend
    assert registry.get("PARROT") is EchoBackend


def test_registry_allow_list_limits_what_loads() -> None:
    registry = Registry()
    registry.load("extractive", eps=[ECHO, ep("extractive", BUILTINS["extractive"])])
    assert registry.names() == ["extractive"]
    with pytest.raises(UnknownBackendError, match="known backends: extractive"):
        registry.get("echo")


def test_registry_records_broken_plugins_instead_of_crashing() -> None:
    registry = Registry()
    registry.load(
        eps=[
            ep("broken", "tests.no_such_module:X"),
            ep("odd", "tests.backends.test_backends:NotABackend"),
            ECHO,
        ]
    )
    assert registry.names() == ["echo"]
    assert "ModuleNotFoundError" in registry.failed["broken"]
    with pytest.raises(UnknownBackendError, match="not an LLMBackend"):
        registry.get("odd")


def test_installed_entry_points_declare_the_builtins() -> None:
    registry = Registry()
    registry.load()
    assert {"extractive", "openai", "local"} <= set(registry.names())
    assert registry.get("extractive") is ExtractiveBackend
    assert registry.get("vllm") is OpenAIBackend
    assert registry.get("gguf") is LocalBackend


def test_rag_backends_allow_env_limits_default_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_BACKENDS_ALLOW", "openai")
    registry = Registry()
    assert registry.names() == ["openai"]


def test_get_backend_unknown_lists_known_names() -> None:
    with pytest.raises(UnknownBackendError) as info:
        get_backend("gpt-99")
    assert isinstance(info.value, KeyError)
    assert "unknown backend 'gpt-99'" in str(info.value) and "extractive" in str(info.value)


@pytest.mark.parametrize("backend", [ExtractiveBackend, OpenAIBackend, LocalBackend])
def test_backend_declares_capabilities_and_strict_options(backend: type[LLMBackend], tmp_path: Path) -> None:
    assert (
        backend.name and isinstance(backend.supports_streaming, bool) and isinstance(backend.needs_key, bool)
    )
    assert backend.Options.model_config.get("extra") == "forbid"
    with pytest.raises(InvalidRequestError, match="unknown option"):
        backend.create(Settings(data_dir=tmp_path, _env_file=None), {"no_such_option": 1})  # type: ignore[call-arg]


def test_create_backend_defaults_to_settings_backend(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backend="extract", _env_file=None)  # type: ignore[call-arg]
    backend = create_backend(None, settings, {"max_sentences": 1})
    assert isinstance(backend, ExtractiveBackend) and backend.options.max_sentences == 1


def test_ask_unknown_backend_returns_400(client: httpx.Client) -> None:
    response = client.post("/v1/ask", json={"question": "Who runs probation?", "backend": "nope"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_backend" and "extractive" in error["message"]


def test_ask_bad_backend_options_return_422(client: httpx.Client) -> None:
    body = {"question": "Who runs probation?", "options": {"max_sentences": 99}}
    response = client.post("/v1/ask", json=body)
    assert response.status_code == 422
    assert "max_sentences" in response.json()["error"]["message"]


def test_ask_uses_a_registered_backend_by_alias(
    client: httpx.Client, scripted: type[ScriptedBackend]
) -> None:
    scripted.enqueue("Scripted says so [1].")
    data = client.post("/v1/ask", json={"question": "Who runs probation?", "backend": "script"}).json()
    assert data["backend"] == "scripted" and data["answer"] == "Scripted says so [1]."


def test_load_registry_keeps_its_own_allow_list_and_backends_registered_in_code() -> None:
    register(EchoBackend)
    try:
        only = load_registry("openai")
        every = load_registry(None)
        assert only.names() == ["echo", "openai"]  # whoever loads later does not widen it
        assert only.get("parrot") is EchoBackend
        assert {"echo", "extractive", "local", "openai"} <= set(every.names())
        with pytest.raises(UnknownBackendError, match="known backends: echo, openai"):
            only.get("extractive")
    finally:
        unregister(EchoBackend.name)
    assert only.names() == ["openai"]
