"""`rag search|ask|cite|documents|passage` as scripts run them: --json against the real server on
127.0.0.1 (through rag.client), JSON lines for batches, tables for people, clean errors; and one
in-process run over the session's index on disk, which must print what the server path prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from rag.cli import app
from rag.ingest.index import Index
from tests.conftest import LiveServer, evidence_quotes, free_port

runner = CliRunner()
QUOTE = "It is too early to confirm the impact on CRC staff."


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(app, list(args), env=env, input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_search_json_matches_the_api(env: dict[str, str], server: LiveServer) -> None:
    out = json.loads(run(env, "search", "pay progression", "-k", "3", "--json", "--url", server.url))
    assert len(out["results"]) == 3
    assert set(out["results"][0]) == {"id", "text", "score", "citation"}
    assert set(out["results"][0]["citation"]) >= {"document_id", "source", "start", "end", "kind"}


def test_cli_search_batch_from_stdin_prints_json_lines_in_order(
    env: dict[str, str], server: LiveServer
) -> None:
    stdin = 'pay progression\n\n{"query": "Serco contracts", "k": 2}\nrenationalisation\n'
    lines = run(env, "search", "-k", "3", "--json", "--url", server.url, stdin=stdin).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["query"] for r in rows] == ["pay progression", "Serco contracts", "renationalisation"]
    assert [len(r["results"]) for r in rows] == [3, 2, 3]


def test_cli_search_batch_from_file_applies_filters(
    env: dict[str, str], server: LiveServer, tmp_path: Path
) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("probation\npay\n", encoding="utf-8")
    out = run(env, "search", "--file", str(queries), "--kind", "reply", "--json", "--url", server.url)
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2
    assert all(r["citation"]["kind"] == "reply" for row in rows for r in row["results"])


def test_cli_cite_json_gives_exact_raw_offsets(env: dict[str, str], server: LiveServer, index: Index) -> None:
    out = json.loads(run(env, "cite", QUOTE, "--json", "--url", server.url))
    (match,) = out["matches"]
    assert match["exact"]
    raw = index.documents[match["citation"]["document_id"]].raw
    assert raw[match["start"] : match["end"]] == QUOTE


def test_cli_cite_batch_prints_one_json_line_per_quote(env: dict[str, str], server: LiveServer) -> None:
    stdin = f"{QUOTE}\nzebras juggling quantum marmalade\n"
    rows = [json.loads(x) for x in run(env, "cite", "--json", "--url", server.url, stdin=stdin).splitlines()]
    assert [r["text"] for r in rows] == [QUOTE, "zebras juggling quantum marmalade"]
    assert rows[0]["matches"][0]["exact"] and not rows[1]["matches"][0]["exact"]


def test_cli_cite_file_sends_batches_of_100_and_prints_json_lines_in_order_remotely_and_locally(
    env: dict[str, str], server: LiveServer, tmp_path: Path
) -> None:
    quoted = [*evidence_quotes(101), "zebras juggling quantum marmalade"]  # two batches: 100, then 2
    lines = [*quoted[:-1], json.dumps({"text": quoted[-1], "k": 2})]
    path = tmp_path / "quotes.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    remote = [
        json.loads(x)
        for x in run(env, "cite", "--file", str(path), "--json", "--url", server.url).splitlines()
    ]
    assert [r["text"] for r in remote] == quoted
    assert all(r["matches"] for r in remote) and len(remote[-1]["matches"]) == 2
    with httpx.Client(base_url=server.url, timeout=60) as http:
        single = http.post("/v1/cite", json={"text": quoted[100]}).json()
    assert remote[100]["matches"] == single["matches"]  # the first quote of the second batch
    local = run(env, "cite", "-", "--json", stdin="\n".join(lines[-3:]) + "\n")
    assert [json.loads(x) for x in local.splitlines()] == remote[-3:]
    dash = run(env, "cite", "--file", "-", "--json", "--url", server.url, stdin="\n".join(lines[-3:]) + "\n")
    assert [json.loads(x) for x in dash.splitlines()] == remote[-3:], "--file - reads standard input"
    missing = runner.invoke(app, ["cite", "--file", str(tmp_path / "none.txt"), "--json"], env=env)
    assert missing.exit_code == 1 and "none.txt: no such file" in " ".join(missing.output.split())


def test_cli_documents_and_passage_json(env: dict[str, str], server: LiveServer, index: Index) -> None:
    listed = json.loads(run(env, "documents", "--json", "--url", server.url))["documents"]
    assert [d["id"] for d in listed] == sorted(index.documents)
    doc = json.loads(run(env, "documents", listed[1]["id"], "--json", "--url", server.url))
    assert doc["id"] == listed[1]["id"] and len(doc["comments"]) == listed[1]["comments"]
    pid = doc["body"]["passage_ids"][0]
    passage = json.loads(run(env, "passage", pid, "--json", "--url", server.url))
    assert passage["id"] == pid and passage["citation"]["kind"] == "post"


def test_cli_tables_for_people(env: dict[str, str], server: LiveServer, index: Index) -> None:
    env = {**env, "COLUMNS": "240"}  # rich wraps to the terminal's width
    doc = index.documents[sorted(index.documents)[0]]
    assert doc.title in run(env, "documents", "--url", server.url)
    assert "comment 1" in run(env, "documents", doc.id, "--url", server.url)
    assert "exact occurrence" in run(env, "cite", QUOTE, "--url", server.url)
    assert "score" in run(env, "search", "pay progression", "--url", server.url)
    chunk = next(c for c in index.chunks if c.kind == "reply")
    assert chunk.id in run(env, "passage", chunk.id, "--url", server.url)


def test_cli_server_errors_are_one_clean_line(env: dict[str, str], server: LiveServer) -> None:
    result = runner.invoke(app, ["passage", "000-nope", "--url", server.url], env=env)
    assert result.exit_code == 1
    assert "error:" in result.output and "000-nope" in result.output and "404" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["cite", "   ", "--json", "--url", server.url], env=env)
    assert result.exit_code == 1 and "text is empty" in result.output
    result = runner.invoke(app, ["documents", "--url", f"http://127.0.0.1:{free_port()}"], env=env)
    assert result.exit_code == 1 and "rag serve" in result.output


def test_cli_in_process_prints_what_the_server_path_prints(env: dict[str, str], server: LiveServer) -> None:
    local = json.loads(run(env, "cite", QUOTE, "--json"))
    remote = json.loads(run(env, "cite", QUOTE, "--json", "--url", server.url))
    assert local == remote


ASKED = "What did one commenter say would be in nobody's interest?"


def test_cli_ask_json_is_what_the_api_returns(
    env: dict[str, str], server: LiveServer, client: httpx.Client
) -> None:
    out = json.loads(run(env, "ask", ASKED, "-k", "3", "--json", "--url", server.url))
    wire = client.post("/v1/ask", json={"question": ASKED, "k": 3}).json()
    assert set(out) == set(wire)
    assert {**out, "took_ms": 0} == {**wire, "took_ms": 0}
    assert out["citations"] and "[1]" in out["answer"]


def test_cli_ask_streams_the_answer_then_lists_its_sources(env: dict[str, str], server: LiveServer) -> None:
    out = run(env, "ask", ASKED, "-k", "3", "--url", server.url)
    answer = json.loads(run(env, "ask", ASKED, "-k", "3", "--json", "--url", server.url))
    first = answer["citations"][0]
    assert " ".join(answer["answer"].split()) in " ".join(out.split())
    assert f"[1] {first['citation']['title']}" in out and first["id"] in out


def test_cli_ask_says_when_the_answer_is_weakly_supported(env: dict[str, str], server: LiveServer) -> None:
    weak = (
        "What change to the way illegal drug taking is handled did the reader's probation wish list call for?"  # noqa: E501 - dev.jsonl d024
    )
    answer = json.loads(run(env, "ask", weak, "--json", "--url", server.url))
    assert answer["support"]["level"] == "weak"
    result = runner.invoke(app, ["ask", weak, "--url", server.url], env=env)
    assert result.exit_code == 0 and "weak support" in result.stderr
    strong = runner.invoke(app, ["ask", ASKED, "--url", server.url], env=env)
    assert strong.exit_code == 0 and "weak support" not in strong.stderr


def test_cli_ask_batch_prints_one_json_line_per_question(env: dict[str, str], server: LiveServer) -> None:
    stdin = f'{ASKED}\n{{"question": "What is the boiling point of mercury?", "k": 2}}\n'
    out = run(env, "ask", "--json", "--url", server.url, stdin=stdin)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in rows] == [ASKED, "What is the boiling point of mercury?"]
    assert not rows[0]["abstained"] and rows[0]["citations"]
    assert rows[1]["abstained"] and rows[1]["answer"] == "The archive doesn't answer this."
