"""Meta-tests: the code stays complete (errors mapped, settings and commands documented, API exported)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import rag
from rag import errors
from rag.cli import app
from rag.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


@pytest.mark.parametrize("cls", _subclasses(errors.RagError), ids=lambda c: c.__name__)
def test_every_rag_error_has_its_own_status_and_code(cls: type[errors.RagError]) -> None:
    assert 400 <= cls.status < 600
    assert cls.code != errors.RagError.code
    assert cls.__name__ in (errors.__doc__ or ""), "the hierarchy drawing in rag/errors.py is complete"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_described_and_documented(name: str) -> None:
    assert Settings.model_fields[name].description
    assert f"RAG_{name.upper()}" in README


def test_every_cli_command_is_documented() -> None:
    for command in app.registered_commands:
        name = command.name or command.callback.__name__  # type: ignore[union-attr]
        assert f"rag {name}" in README, name


def test_public_api_is_exported_and_importable() -> None:
    for name in rag.__all__:
        assert getattr(rag, name) is not None
    assert {"build_index", "Passage", "Retriever"} <= set(rag.__all__)
    with pytest.raises(AttributeError):
        rag.nope  # noqa: B018


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RAG_CHUNK_OVERLAP"):
        Settings(data_dir=tmp_path, chunk_size=64, chunk_overlap=64, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="RAG_DATA_DIR"):
        Settings(data_dir=tmp_path / "missing", _env_file=None)  # type: ignore[call-arg]


def test_library_never_imports_fastapi() -> None:
    root = Path(rag.__file__).parent
    for path in root.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "import fastapi" not in source and "from fastapi" not in source, path
    assert inspect.getsource(errors).count("status") > 3
