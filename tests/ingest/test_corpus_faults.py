"""Bad files in the corpus folder: unreadable (chmod 000), not UTF-8, binary, or half-written (cut off
mid-character or mid-comment). Each is reported with its file and line and the rest is ingested; the
last test runs a real `rag ingest` over a folder holding all of them."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag.ingest.corpus import load_corpus
from tests.ingest.test_corpus import STRUCTURED

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"
CUT_MID_CHARACTER = STRUCTURED.encode("utf-8")[: STRUCTURED.encode("utf-8").index("é".encode()) + 1]
CUT_MID_COMMENT = STRUCTURED[: STRUCTURED.index("    Second line of it.")]
NUL_LINE = STRUCTURED.count("\n", 0, STRUCTURED.index("Body line two.")) + 1


def unprivileged() -> dict[str, Any]:
    """chmod 000 does not stop root, whose CAP_DAC_OVERRIDE reads any file: when the tests run as root,
    the child drops that capability (and CAP_DAC_READ_SEARCH) before it starts, so file permissions
    hold for it as for any other user."""
    if os.geteuid() != 0:
        return {}

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone once the child execs
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return {"preexec_fn": drop}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """One good post and every kind of bad one."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "good.txt").write_text(STRUCTURED, encoding="utf-8")
    (data / "unreadable.txt").write_text(STRUCTURED, encoding="utf-8")
    (data / "unreadable.txt").chmod(0)
    (data / "image.txt").write_bytes(PNG)
    (data / "nul.txt").write_text(STRUCTURED.replace("Body line two.", "Body\0line two."), encoding="utf-8")
    (data / "cut-mid-character.txt").write_bytes(CUT_MID_CHARACTER)
    (data / "cut-mid-comment.txt").write_text(CUT_MID_COMMENT, encoding="utf-8")
    return tmp_path


EXPECTED_ERRORS = {
    "unreadable.txt": (1, "cannot be read (Permission denied)"),
    "image.txt": (1, "not UTF-8 text (invalid start byte)"),
    "nul.txt": (NUL_LINE, "binary data (a NUL byte)"),
    "cut-mid-character.txt": (STRUCTURED.count("\n", 0, STRUCTURED.index("é")) + 1, "not UTF-8 text"),
}


def test_load_corpus_reports_each_bad_file_with_file_and_line_and_keeps_the_rest(folder: Path) -> None:
    script = (
        "import json, sys; from rag.ingest.corpus import load_corpus;"
        "c = load_corpus(__import__('pathlib').Path(sys.argv[1]));"
        "print(json.dumps({'docs': [d.source for d in c.documents],"
        " 'errors': {e.source: [e.line, e.reason] for e in c.errors}, 'warnings': c.warnings}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(folder / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        **unprivileged(),
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert sorted(report["docs"]) == ["cut-mid-comment.txt", "good.txt"]
    assert report["errors"].keys() == EXPECTED_ERRORS.keys()
    for name, (line, reason) in EXPECTED_ERRORS.items():
        assert report["errors"][name][0] == line, name
        assert report["errors"][name][1].startswith(reason), (name, report["errors"][name])
    # The file cut off mid-comment still parses; its header's count no longer matches, said with file:line.
    assert report["warnings"] == [
        "cut-mid-comment.txt:8: header says 3 comments (comments plus replies) but 1 were found"
    ]


def test_a_file_cut_off_mid_character_names_the_line_it_was_cut_on(tmp_path: Path) -> None:
    (tmp_path / "cut.txt").write_bytes(CUT_MID_CHARACTER)
    (error,) = load_corpus(tmp_path).errors
    assert (
        str(error)
        == f"cut.txt:{EXPECTED_ERRORS['cut-mid-character.txt'][0]}: not UTF-8 text (unexpected end of data)"
    )


def test_rag_ingest_skips_bad_files_reports_them_and_indexes_the_rest(folder: Path) -> None:
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(folder / "data"),
        "RAG_INDEX_DIR": str(folder / "index"),
        "HOME": str(folder),
        "COLUMNS": "200",
    }
    run = subprocess.run(
        [str(Path(sys.executable).with_name("rag")), "ingest"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=folder,
        **unprivileged(),
    )
    assert run.returncode == 1, "bad files make the exit status 1, so a script notices"
    for name, (line, reason) in EXPECTED_ERRORS.items():
        assert f"skipped {name}:{line}: {reason}" in run.stderr, (name, run.stderr)
    assert "warning cut-mid-comment.txt:8:" in run.stderr
    assert "Traceback" not in run.stderr
    assert "indexed 2 posts" in run.stdout
    manifest = json.loads((folder / "index" / "current" / "manifest.json").read_text())
    assert manifest["documents"] == 2
