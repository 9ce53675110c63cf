"""The backend registry: names (and aliases) to `LLMBackend` classes.

Built-in and third-party backends arrive the same way, through the ``rag.backends`` entry-point
group (``name = "package.module:Class"``); a separate package adds one by declaring an entry
point. ``RAG_BACKENDS_ALLOW`` (comma-separated names) limits which entry points load, so tests and
locked-down deployments never import whatever happens to be installed. When this package runs
from a checkout that was never installed, the built-ins are found at their known locations.

`register` also works directly (tests register a scripted backend and remove it afterwards).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from rag.backends.base import LLMBackend
from rag.errors import UnknownBackendError
from rag.settings import Settings

logger = logging.getLogger(__name__)
GROUP = "rag.backends"
BUILTINS = {
    "extractive": "rag.backends.extractive:ExtractiveBackend",
    "openai": "rag.backends.openai:OpenAIBackend",
    "local": "rag.backends.local:LocalBackend",
}
B = TypeVar("B", bound=type[LLMBackend])

__all__ = [
    "LLMBackend",
    "Registry",
    "available_backends",
    "create_backend",
    "get_backend",
    "load_backends",
    "register",
    "registry",
    "unregister",
]


def _parse_allow(allow: str | None) -> set[str] | None:
    if allow is None or not allow.strip():
        return None
    return {name.strip() for name in allow.split(",") if name.strip()}


class Registry:
    """Backends by name, with aliases; loads entry points once, on first use."""

    def __init__(self, group: str = GROUP) -> None:
        self.group = group
        self._classes: dict[str, type[LLMBackend]] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False
        self.failed: dict[str, str] = {}  # entry point name -> why it did not load

    def register(self, cls: B) -> B:
        """Add `cls` under `cls.name` and its aliases (usable as a class decorator)."""
        self._classes[cls.name] = cls
        for alias in cls.aliases:
            self._aliases[alias] = cls.name
        return cls

    def unregister(self, name: str) -> None:
        cls = self._classes.pop(name, None)
        if cls is not None:
            for alias in cls.aliases:
                self._aliases.pop(alias, None)

    def load(self, allow: str | None = None, eps: list[EntryPoint] | None = None) -> None:
        """Load the entry-point group (or `eps`), keeping only names in `allow` when it is set."""
        wanted = _parse_allow(allow)
        found = list(eps) if eps is not None else list(entry_points(group=self.group))
        if eps is None and self.group == GROUP:
            names = {ep.name for ep in found}
            found += [EntryPoint(name, ref, GROUP) for name, ref in BUILTINS.items() if name not in names]
        for ep in found:
            if wanted is not None and ep.name not in wanted:
                continue
            try:
                cls = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the service down
                logger.warning("backend %r (%s) failed to load: %s", ep.name, ep.value, exc)
                self.failed[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            if not (isinstance(cls, type) and issubclass(cls, LLMBackend)):
                self.failed[ep.name] = f"{ep.value} is not an LLMBackend subclass"
                continue
            self.register(cls)
        self._loaded = True

    def ensure_loaded(self, allow: str | None = None) -> None:
        """Load once, limited by `allow` or else the RAG_BACKENDS_ALLOW environment variable."""
        if not self._loaded:
            self.load(allow if allow is not None else os.environ.get("RAG_BACKENDS_ALLOW"))

    def names(self) -> list[str]:
        self.ensure_loaded()
        return sorted(self._classes)

    def get(self, name: str) -> type[LLMBackend]:
        self.ensure_loaded()
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._classes:
            known = ", ".join(self.names()) or "none"
            hint = f" ({self.failed[key]})" if key in self.failed else ""
            raise UnknownBackendError(f"unknown backend {name!r}{hint}; known backends: {known}")
        return self._classes[key]


registry = Registry()
_default = registry


def load_backends(allow: str | None = None) -> None:
    """(Re)load the entry-point group into the default registry, honouring `allow`."""
    registry.load(allow)


def register(cls: B) -> B:
    return registry.register(cls)


def unregister(name: str) -> None:
    registry.unregister(name)


def get_backend(name: str) -> type[LLMBackend]:
    """The backend class for `name` or an alias; raises UnknownBackendError listing known names."""
    return registry.get(name)


def available_backends(allow: str | None = None) -> list[str]:
    """Names of the registered backends (loading them first, limited by `allow`)."""
    registry.ensure_loaded(allow)
    return registry.names()


def create_backend(
    name: str | None,
    settings: Settings,
    options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> LLMBackend:
    """A ready backend: `name` (default: settings.backend) configured from settings and options,
    from `registry` (default: the module's registry, loaded with settings.backends_allow)."""
    chosen = registry if registry is not None else _default
    chosen.ensure_loaded(settings.backends_allow)
    return chosen.get(name or settings.backend).create(settings, options)
