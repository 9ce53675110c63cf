"""Who may call: optional API keys sent as ``Authorization: Bearer <key>``.

With no keys configured everything is open (the server binds loopback by default, and `rag serve`
refuses a public address without keys unless told to). With keys configured, every ``/v1`` route and
``/metrics`` need one; health probes, the chat page, its static files and the docs stay open, so a
load balancer can probe and a browser can load the page that then asks for a key.

``/metrics`` is guarded too: it tells whoever reads it how busy the server is, which key ids call
it and how big the index is, and Prometheus sends a bearer token as easily as a browser does.

Keys are compared in constant time, by their SHA-256 digests so that a key's length does not leak
either, and never logged: logs and the rate limiter name a key by `KeyRing.key_id`, the first 8
hex digits of an HMAC-SHA-256 of the key under a server secret (``RAG_KEY_ID_SECRET``, random at
each start unless set). A plain hash of a short key could be guessed back from the log by trying
keys; without the secret, an id says nothing about the key it names.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import rag_error_response
from rag.errors import UnauthorizedError
from rag.settings import Settings

PROTECTED = ("/v1", "/metrics")  # path prefixes that need a key when keys are configured
KEY_ID = "rag.key_id"  # scope entry: the caller's key id, or None without a valid key


class KeyRing:
    """The configured keys, kept only as digests, and the secret their ids are made with."""

    def __init__(self, keys: Iterable[str] = (), id_secret: bytes | None = None) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self._id_secret = id_secret if id_secret else secrets.token_bytes(32)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """Keys from RAG_API_KEYS (comma-separated) and RAG_API_KEYS_FILE (one per line); ids made
        with RAG_KEY_ID_SECRET (a random secret when unset)."""
        keys = []
        if settings.api_keys is not None:
            keys += settings.api_keys.get_secret_value().split(",")
        if settings.api_keys_file is not None:
            lines = settings.api_keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line for line in lines if not line.lstrip().startswith("#")]
        secret = settings.key_id_secret.get_secret_value().encode() if settings.key_id_secret else None
        return cls((k.strip() for k in keys if k.strip()), secret)

    def key_id(self, key: str) -> str:
        """A short, stable name for a key, safe to log: 8 hex digits of an HMAC-SHA-256 of it."""
        return hmac.new(self._id_secret, key.encode(), hashlib.sha256).hexdigest()[:8]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def identify(self, presented: str) -> str | None:
        """The key id of `presented` if it is one of the keys, else None. Every key is compared,
        whichever matches, so the time taken says nothing about which one did or how close."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, digest)
        return self.key_id(presented) if found else None


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if the request sent one."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def is_protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class Access:
    """Identify the caller by key and refuse a protected path without a valid one (401).

    Runs before routing, as pure ASGI middleware, so a refused request costs no thread and no
    body read; it records the key id in the scope for the rate limiter, the log and `KeyRequired`.
    """

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        scope[KEY_ID] = self.keys.identify(token) if token is not None and self.keys else None
        if self.keys and scope[KEY_ID] is None and is_protected(scope["path"]):
            if token is None:
                reason = "this endpoint needs an API key: send the header `Authorization: Bearer <key>`"
            else:
                reason = "the API key sent is not valid"
            await rag_error_response(UnauthorizedError(reason))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def require_key(request: Request) -> str:
    """A route that changes state declares ``dependencies=[KeyRequired]``: it then needs a valid key
    even when reads are open, and is refused outright while no keys are configured."""
    found: str | None = request.scope.get(KEY_ID)
    if found is not None:
        return found
    keys: KeyRing = request.app.state.keys
    if not keys:
        raise UnauthorizedError(
            "this operation changes the server's state and needs an API key; none is configured "
            "(set RAG_API_KEYS or RAG_API_KEYS_FILE)"
        )
    raise UnauthorizedError("this operation needs an API key: send the header `Authorization: Bearer <key>`")


KeyRequired = Depends(require_key)
KeyIdDep = Annotated[str, KeyRequired]
