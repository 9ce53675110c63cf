"""The `rag` command (the top layer: the only part of `rag` that may import `api`)."""

from rag.cli.main import app

__all__ = ["app"]
