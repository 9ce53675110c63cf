"""Meta-tests: the code stays complete (errors mapped, settings and commands documented, API exported)."""

from __future__ import annotations

import ast
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


ROOT = Path(rag.__file__).parent
TOP_LAYER = "rag.cli"  # the command line is the only part of the library that may use the web app


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules `path` imports (by its syntax tree, lazy imports inside functions included unless
    `top_level_only`), relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


LIBRARY = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_library_never_imports_api_except_the_cli(path: Path) -> None:
    name = _module_name(path)
    if name == TOP_LAYER or name.startswith(f"{TOP_LAYER}."):
        return
    web = sorted(m for m in _imports(path) if m == "api" or m.startswith("api."))
    assert not web, f"{name} imports {web}: only {TOP_LAYER} (the top layer) may import api"


def test_library_import_graph_has_no_cycles() -> None:
    names = {_module_name(p): p for p in LIBRARY}
    graph = {
        name: {m for m in _imports(path, top_level_only=True) if m in names and m != name}
        for name, path in names.items()
    }
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, "import cycle: " + " -> ".join([*trail[trail.index(name) :], name])
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, (*trail, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
