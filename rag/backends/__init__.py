"""The backend registry: names (and aliases) to `LLMBackend` classes.

Built-in and third-party backends arrive the same way, through the ``rag.backends`` entry-point
group (``name = "package.module:Class"``); a separate package adds one by declaring an entry
point. ``RAG_BACKENDS_ALLOW`` (comma-separated names) limits which entry points load, so tests and
locked-down deployments never import whatever happens to be installed. When this package runs
from a checkout that was never installed, the built-ins are found at their known locations.

`register` also works directly (tests register a scripted backend and remove it afterwards).

Whoever serves requests builds a registry of its own with `load_registry(settings.backends_allow)`
(the app does it in its lifespan and keeps it on its state), so the allow list is that caller's
settings, not whichever caller happened to load the shared default first. Such a registry also
offers the backends registered in code on the default registry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from rag.backends.base import LLMBackend
from rag.errors import UnknownBackendError, echoed
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
    "load_registry",
    "register",
    "registry",
    "unregister",
]


def _parse_allow(allow: str | None) -> set[str] | None:
    if allow is None or not allow.strip():
        return None
    return {name.strip() for name in allow.split(",") if name.strip()}


class Registry:
    """Backends by name, with aliases; loads entry points once, on first use.

    `also` is a registry whose backends registered in code (not its entry points) this one offers
    too, after its own.
    """

    def __init__(self, group: str = GROUP, also: Registry | None = None) -> None:
        self.group = group
        self.also = also
        self._classes: dict[str, type[LLMBackend]] = {}
        self._aliases: dict[str, str] = {}
        self._in_code: set[str] = set()  # names added by register(), not by load()
        self._loaded = False
        self.failed: dict[str, str] = {}  # entry point name -> why it did not load

    def _add(self, cls: B) -> B:
        self._classes[cls.name] = cls
        for alias in cls.aliases:
            self._aliases[alias] = cls.name
        return cls

    def register(self, cls: B) -> B:
        """Add `cls` under `cls.name` and its aliases (usable as a class decorator)."""
        self._in_code.add(cls.name)
        return self._add(cls)

    def unregister(self, name: str) -> None:
        self._in_code.discard(name)
        cls = self._classes.pop(name, None)
        if cls is not None:
            for alias in cls.aliases:
                self._aliases.pop(alias, None)

    def _registered_in_code(self) -> dict[str, type[LLMBackend]]:
        """Backends of `also` registered in code, by name and alias."""
        if self.also is None:
            return {}
        out: dict[str, type[LLMBackend]] = {}
        for name in self.also._in_code:
            cls = self.also._classes[name]
            out[name] = cls
            out.update({alias: cls for alias in cls.aliases})
        return out

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
            self._add(cls)
        self._loaded = True

    def ensure_loaded(self, allow: str | None = None) -> None:
        """Load once, limited by `allow` or else the RAG_BACKENDS_ALLOW environment variable."""
        if not self._loaded:
            self.load(allow if allow is not None else os.environ.get("RAG_BACKENDS_ALLOW"))

    def names(self) -> list[str]:
        self.ensure_loaded()
        extra = {cls.name for cls in self._registered_in_code().values()}
        return sorted(set(self._classes) | extra)

    def choices(self) -> list[str]:
        """Every name and alias a request may pick a backend by, as known now."""
        self.ensure_loaded()
        return sorted({*self.names(), *self._aliases, *self._registered_in_code()})

    def get(self, name: str) -> type[LLMBackend]:
        self.ensure_loaded()
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._classes and key in (extra := self._registered_in_code()):
            return extra[key]
        if key not in self._classes:
            known = ", ".join(self.names()) or "none"
            hint = f" ({self.failed[key]})" if key in self.failed else ""
            raise UnknownBackendError(f"unknown backend {echoed(name)}{hint}; known backends: {known}")
        return self._classes[key]


registry = Registry()


def load_registry(allow: str | None) -> Registry:
    """A registry of its own: the entry points `allow` permits (all when None), plus the backends
    registered in code on the default registry."""
    own = Registry(also=registry)
    own.load(allow)
    return own


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
    from `registry` (default: one loaded for these settings' allow list)."""
    chosen = registry if registry is not None else load_registry(settings.backends_allow)
    return chosen.get(name or settings.backend).create(settings, options)
