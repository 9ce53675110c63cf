"""`rag ingest`, `rag eval` and `rag search` as a user runs them, on the real model and index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from rag.cli import app
from tests.conftest import DATA, DEV

ROOT_DATA = DATA.parent / "tests" / "data"

runner = CliRunner()


def test_cli_eval_prints_hybrid_bm25_and_dense_figures(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["eval", "--questions", str(DEV)], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"hybrid", "bm25", "dense", "index"}
    for mode in ("hybrid", "bm25", "dense"):
        assert set(report[mode]) >= {"hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "questions"}
        assert report[mode]["questions"] == 27
        low, high = report[mode]["all"]["hit@5"]["ci95"]
        assert low <= report[mode]["hit@5"] <= high
    assert report["bm25_1000_chars"]["all"]["hit@5"]["n"] == 27


def test_cli_eval_pools_sets_and_pairs_a_changed_setting(env: dict[str, str]) -> None:
    reworded = ROOT_DATA / "reworded.jsonl"
    args = ["eval", "--questions", str(DEV), "--questions", str(reworded), "--against", "dense_weight=0.3"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["hybrid"]["by_set"]) == {DEV.stem, "reworded"}
    assert report["hybrid"]["questions"] == 27 + 24
    paired = report["against"]["paired"]["hit@5"]
    assert paired["wins"] + paired["losses"] + paired["ties"] == 51
    assert report["against_settings"] == {"dense_weight": 0.3}


def test_cli_eval_cv_by_set_chooses_the_fusion_with_each_question_file_held_out(env: dict[str, str]) -> None:
    reworded = ROOT_DATA / "reworded.jsonl"
    args = ["eval", "--questions", str(DEV), "--questions", str(reworded), "--cv-by-set"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    held_out = report["cross_validated_by_set"]
    assert set(held_out["by_set"]) == {DEV.stem, "reworded"}
    assert held_out["setting"] == ["fusion", "dense_weight"]
    assert held_out["held_out"]["hit@5"]["n"] == 27 + 24
    assert "weighted 0.0" in report["fusions"]  # BM25 alone, the floor every fusion is paired with


def test_cli_eval_cv_by_set_of_one_file_is_one_clean_line(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["eval", "--questions", str(DEV), "--cv-by-set"], env=env)
    assert result.exit_code == 1
    assert "cross-validation by set needs questions from at least two files" in result.output
    assert "Traceback" not in result.output


def test_cli_eval_answers_cross_validated(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["eval", "--questions", str(DEV), "--answers", "--cv", "3"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["answers"]
    assert report["all"]["gold"]["n"] == 27 and report["all"]["abstained"]["n"] == 3
    assert sum(c["folds"] for c in report["cross_validated"]["chosen"]) == 3 * 3
    assert set(report["by_kind"]) >= {"fact", "unanswerable"}


def test_cli_eval_against_needs_key_value(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["eval", "--questions", str(DEV), "--against", "chunk_size"], env=env)
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


def test_cli_eval_against_an_unknown_setting_is_refused(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["eval", "--questions", str(DEV), "--against", "nonsense=1"], env=env)
    assert result.exit_code == 2
    assert "not a RAG_ setting" in result.output


def test_cli_eval_more_folds_than_questions_is_one_clean_line(env: dict[str, str], tmp_path: Path) -> None:
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join(DEV.read_text(encoding="utf-8").splitlines()[:3]), encoding="utf-8")
    result = runner.invoke(app, ["eval", "--questions", str(few), "--cv", "5"], env=env)
    assert result.exit_code == 1
    assert "cross-validation needs 2 <= folds <= questions" in result.output
    assert "Traceback" not in result.output


def test_cli_ingest_reports_bad_files_and_indexes_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DATA / "003_ea05dc3451fe564a.txt", data)
    (data / "broken.txt").write_text("", encoding="utf-8")
    env = {"RAG_DATA_DIR": str(data), "RAG_INDEX_DIR": str(tmp_path / "index"), "HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["ingest"], env=env)
    assert result.exit_code == 1
    assert "broken.txt:1: file is empty" in result.output
    assert "indexed 1 posts" in result.output
    assert (tmp_path / "index" / "current" / "manifest.json").exists()


def test_cli_error_is_one_clean_line(tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path), "RAG_INDEX_DIR": str(tmp_path / "i"), "HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["eval", "--questions", str(DATA / "000_04b72ef4a6ddfc0f.txt")], env=env)
    assert result.exit_code == 1
    assert "error:" in result.output and "not a question record" in result.output
    assert "Traceback" not in result.output
