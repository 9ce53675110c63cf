"""What the CLI reads and prints: batch input lines, JSON for scripts, and rich tables for people.

Every printer takes the typed results of `rag.client`, so a command prints the same thing whether
it ran in-process or against a server. Not here: argument parsing (`rag.cli`) or any retrieval.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from rag.client import Answer, Citation, Document, DocumentSummary, Passage, QuoteMatch, SearchResponse
from rag.errors import InvalidRequestError
from rag.ingest.corpus import node_label


def read_batch(path: Path | None, stdin: TextIO | None = None) -> Iterator[str | dict[str, Any]]:
    """Non-blank lines of `path` (or stdin, also for a path of ``-``): plain text, or a JSON object
    such as a search request."""
    if path is not None and str(path) == "-":
        path = None
    elif path is not None and not path.is_file():
        raise InvalidRequestError(f"--file {path}: no such file")
    stream = path.open(encoding="utf-8") if path is not None else (stdin or sys.stdin)
    try:
        for number, line in enumerate(stream, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise InvalidRequestError(f"line {number}: not valid JSON ({exc})") from exc
                yield item
            else:
                yield line
    finally:
        if path is not None:
            stream.close()


def search_requests(
    items: Iterable[str | dict[str, Any]], k: int, filters: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Search requests from batch lines: a plain line gets `k` and `filters`, a JSON one stays as is."""
    base: dict[str, Any] = {"k": k, **({"filters": filters} if filters else {})}
    return [{"query": item, **base} if isinstance(item, str) else item for item in items]


def plain(value: Any) -> Any:
    """Dataclasses (and lists of them) as JSON-ready dicts, in the server's wire format."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def write_json(value: Any, lines: bool = False, stream: TextIO | None = None) -> None:
    """One JSON document (indented), or one compact line when `lines` (JSON lines)."""
    text = json.dumps(plain(value), ensure_ascii=False, indent=None if lines else 2)
    (stream or sys.stdout).write(text + "\n")


def where(c: Citation) -> str:
    """'Title / 2019-02-22 / reply 2 to comment 4 / file.txt [start:end]'."""
    return f"{c.title}\n{c.date or 'undated'}\n{node_label(c.kind, c.comment, c.reply)}\n{c.source}"


def print_search(console: Console, response: SearchResponse, query: str | None = None) -> None:
    table = Table("#", "score", "where", "text", show_lines=True, title=query)
    for n, r in enumerate(response.results, start=1):
        c = r.citation
        table.add_row(str(n), f"{r.score:.3f}", f"{where(c)} [{c.start}:{c.end}]\n{r.id}", r.text)
    console.print(table)


def print_matches(console: Console, matches: list[QuoteMatch], quote: str | None = None) -> None:
    if not matches:
        console.print("no passages found")
        return
    exact = matches[0].exact
    title = f"{len(matches)} exact occurrence(s)" if exact else "no exact occurrence; closest passages"
    table = Table("#", "exact" if exact else "score", "where", "passage", show_lines=True, title=title)
    for n, m in enumerate(matches, start=1):
        span = f"[{m.start}:{m.end}]"
        ids = ", ".join(m.passage_ids)
        table.add_row(str(n), "yes" if m.exact else f"{m.score:.3f}", f"{where(m.citation)} {span}", ids)
    if quote:
        console.print(f"[bold]{quote}[/bold]")
    console.print(table)


def print_documents(console: Console, documents: list[DocumentSummary]) -> None:
    table = Table("id", "date", "title", "comments", "replies", "source")
    for d in documents:
        table.add_row(d.id, d.date or "undated", d.title, str(d.comments), str(d.replies), d.source)
    console.print(table)


def print_document(console: Console, doc: Document, width: int = 160) -> None:
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    tree = Tree(f"[bold]{doc.title}[/bold] ({doc.date or 'undated'}) {doc.source}")
    tree.add(f"post [{doc.body.start}:{doc.body.end}] {short(doc.body.text)}")
    for c in doc.comments:
        branch = tree.add(f"comment {c.number} [{c.start}:{c.end}] {short(c.text)}")
        for r in c.replies:
            branch.add(f"reply {r.number} [{r.start}:{r.end}] {short(r.text)}")
    console.print(tree)


def print_passage(console: Console, p: Passage) -> None:
    c = p.citation
    console.print(f"[bold]{p.id}[/bold]  {where(c).replace(chr(10), ' / ')} [{c.start}:{c.end}]")
    if p.context.parent:
        console.print(f"[dim]in reply to comment {p.context.parent.comment}:[/dim] {p.context.parent.text}")
    if p.context.before:
        console.print(f"[dim]…{p.context.before}[/dim]")
    console.print(p.text)
    if p.context.after:
        console.print(f"[dim]{p.context.after}…[/dim]")


def print_answer_sources(console: Console, err: Console, answer: Answer, question: str | None = None) -> None:
    """After a streamed answer: the query searched (when rewritten), each [n]'s source, weak
    support, warnings."""
    console.print()
    if question is not None and answer.query != question:
        err.print(f"[dim]searched for:[/dim] {answer.query}")
    for c in answer.citations:
        where_ = escape(where(c.citation).replace("\n", " / "))  # corpus text, not markup
        console.print(f"[bold]\\[{c.n}][/bold] {where_}  [dim]{c.id}[/dim]", highlight=False, soft_wrap=True)
    if answer.support is not None and answer.support.level == "weak":
        err.print(
            f"[yellow]weak support:[/yellow] the cited passages match the question poorly "
            f"(support {answer.support.score:.2f}); check them before relying on this answer"
        )
    for warning in answer.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
