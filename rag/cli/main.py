"""The `rag` command: parses arguments and calls the library; no logic of its own lives here."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag.errors import RagError
from rag.settings import Settings

app = typer.Typer(help="Search and cited answers over the probation blog archive.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Use the server at this URL (http://127.0.0.1:8000), not the local index."),
]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        dir_okay=False,
        allow_dash=True,  # typer 0.29 checks a dash as a path, so `read_batch` checks that it exists
        help="Read one query per line from this file ('-': standard input).",
    ),
]
BATCH = 100  # queries per POST /v1/search/batch, quotes per POST /v1/cite/batch
T = TypeVar("T")
R = TypeVar("R")


def settings(**overrides: Any) -> Settings:
    """Settings from the environment, with CLI options (when given) taking precedence."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:  # pydantic's ValidationError names the variable
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _is_client_error(exc: Exception) -> bool:
    """True for the client's error. Only commands that talk to a server import `rag.client` (and
    httpx with it, a tenth of a second of every start); a process that has not cannot have raised it."""
    client = sys.modules.get("rag.client")
    return client is not None and isinstance(exc, client.ClientError)


@contextmanager
def reported() -> Iterator[None]:
    """Print a RagError (or a server's error) as one clean line (re-raise with RAG_RAISE_ERRORS=1)."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, RagError) and not _is_client_error(exc):
            raise
        if os.environ.get("RAG_RAISE_ERRORS", "").lower() in {"1", "true", "yes"}:
            raise
        err.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        raise typer.Exit(1) from exc


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    if not err.is_terminal:
        # No live bar in a log (a container build, CI, a pipe): one line per tenth of each stage.
        shown: dict[str, int] = {}

        def log(stage: str, done: int, total: int) -> None:
            tenth = done * 10 // max(total, 1)
            if shown.get(stage, -1) < tenth:
                shown[stage] = tenth
                err.print(f"{stage} {done}/{total}", highlight=False)

        yield log
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _embedder(s: Settings) -> Any:
    from rag.ingest.embedding import Embedder

    return Embedder.from_settings(s)


def _retriever(s: Settings) -> Any:
    from rag.service import make_retriever, open_index

    embedder = _embedder(s)
    with progress_bar() as update:
        opened = open_index(s, embedder, update)
    if opened.rebuilt:
        err.print(f"[yellow]built the index:[/yellow] {opened.reason}")
    return make_retriever(s, opened.index, embedder)


@app.command()
def ingest(
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory of post files (default RAG_DATA_DIR).")
    ] = None,
    index_dir: Annotated[
        Path | None, typer.Option(help="Where to write the index (default RAG_INDEX_DIR).")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Embed everything again instead of reusing the current index.")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait while another ingest (another `rag ingest`, or a server ingesting "
            "its data folder) writes the index, before giving up; 0 gives up at once.",
        ),
    ] = 300,
) -> None:
    """Parse the posts, chunk them, embed what is new or changed, and write a fresh index."""
    from rag.service import ingest as build

    s = settings(data_dir=data_dir, index_dir=index_dir)
    with reported():
        embedder = _embedder(s)
        with progress_bar() as update:
            index, corpus = build(s, embedder, update, full=full, wait=wait)
    for error in corpus.errors:
        err.print(f"[red]skipped[/red] {error}")
    for warning in corpus.warnings:
        err.print(f"[yellow]warning[/yellow] {warning}")
    m = index.manifest
    out.print(
        f"indexed {m['documents']} posts into {m['chunks']} chunks and {m['sentences']} sentences "
        f"with {m['model']} ({m['dimension']}-d) -> {s.index_dir}/"
    )
    out.print(_reuse_report(m["incremental"]))
    if corpus.errors:
        raise typer.Exit(1)


def _reuse_report(incremental: dict[str, Any]) -> str:
    """What an ingest encoded and what it took from the previous build, as the manifest records it."""
    from rag.ingest.incremental import Changes

    encoded, reused = incremental["encoded"], incremental["reused"]
    if incremental["base"] is None:
        return f"encoded all {encoded} texts (no previous build to reuse)"
    changes = Changes(**incremental["changes"]).summary()
    return f"encoded {encoded} texts, reused {reused} from {incremental['base']} ({changes})"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default RAG_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RAG_PORT).")] = None,
    allow_unauthenticated: Annotated[
        bool | None,
        typer.Option(
            "--allow-unauthenticated",
            help="Bind a non-loopback address without API keys (RAG_ALLOW_UNAUTHENTICATED).",
        ),
    ] = None,
    trusted_proxies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated addresses or networks of proxies whose X-Forwarded-For is believed "
            "(RAG_TRUSTED_PROXIES; uvicorn calls it --forwarded-allow-ips). Default: none.",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes sharing one memory-mapped index.")
    ] = 1,
) -> None:
    """Serve the HTTP API and the chat page; builds the index first if it is missing."""
    from api.main import create_app
    from api.security import KeyRing, is_loopback
    from api.serving import serve as run

    s = settings(
        host=host, port=port, allow_unauthenticated=allow_unauthenticated, trusted_proxies=trusted_proxies
    )
    if not is_loopback(s.host) and not KeyRing.from_settings(s) and not s.allow_unauthenticated:
        err.print(
            f"[red]refusing to serve on {s.host} without API keys:[/red] anyone who can reach it could "
            "use it. Set RAG_API_KEYS (or RAG_API_KEYS_FILE), bind 127.0.0.1, or pass "
            "--allow-unauthenticated (RAG_ALLOW_UNAUTHENTICATED=true) if something in front of it "
            "already checks who calls."
        )
        raise typer.Exit(2)
    # access_log off: the app writes its own JSON line per request (api/telemetry.py). Header/body
    # timeouts, a connection cap, proxy headers and a graceful shutdown: api/serving.py.
    if workers == 1:
        run(create_app(s), s, log_level="info", access_log=False)
        return
    from api.workers import serve_workers
    from rag.service import ensure_index

    with reported(), progress_bar() as update:
        built = ensure_index(s, update)
    if built:
        err.print(f"[yellow]built the index:[/yellow] {built}")
    # The index is ready now, so no worker may build one of its own (N builds racing for
    # index/current). Each worker runs what one process runs above: api/workers.py.
    # Every worker must name a key alike (logs, rate limits): one key-id secret for all of them.
    secret = s.key_id_secret or SecretStr(secrets.token_hex(32))
    code = serve_workers(s.model_copy(update={"on_stale": "refuse", "key_id_secret": secret}), workers)
    if code:
        raise typer.Exit(code)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the synthetic post files into.")],
    posts: Annotated[int, typer.Option(min=1, help="How many posts.")] = 100,
    comments: Annotated[int, typer.Option(min=0, help="Mean comments per post (replies included).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same bytes.")] = 0,
    source: Annotated[
        Path | None, typer.Option(help="Post files to take the words from (default RAG_DATA_DIR).")
    ] = None,
) -> None:
    """Write a seeded synthetic archive in the blog's format, for scale tests."""
    from rag.synth import SynthSpec, write_archive

    s = settings(data_dir=source)
    written = write_archive(s.data_dir, out_dir, SynthSpec(posts, comments, seed))
    out.print(f"wrote {written} posts to {out_dir}/ (seed {seed}, words from {s.data_dir}/)")


def _filters(
    document: list[str] | None, kind: list[str] | None, date_from: str | None, date_to: str | None
) -> dict[str, Any]:
    """The filters of POST /v1/search from the command's options (empty ones left out)."""
    given = {"document_id": document, "kind": kind, "date_from": date_from, "date_to": date_to}
    return {k: v for k, v in given.items() if v}


@contextmanager
def _client(s: Settings, url: str | None) -> Iterator[Any]:
    """A `rag.client.Client` on the server at `url`, or the library over the local index in the
    same shapes (`rag.cli.local`), so a command prints the same output either way."""
    from rag.client import Client

    if url:
        key = s.api_key.get_secret_value() if s.api_key is not None else None
        with Client(url, api_key=key) as client:
            yield client
        return
    from rag.cli.local import LocalClient

    yield LocalClient(s, _retriever(s))


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="What to search for ('-' or none: read).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="How many passages.")] = 5,
    document: Annotated[list[str] | None, typer.Option(help="Only this post id (repeatable).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="post, comment or reply (repeatable).")] = None,
    date_from: Annotated[str | None, typer.Option(help="Earliest post date, YYYY-MM-DD.")] = None,
    date_to: Annotated[str | None, typer.Option(help="Latest post date, YYYY-MM-DD.")] = None,
    file: FileOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the archive and print the best passages with their citations.

    With --file (or no QUERY, reading stdin) each line is a query, or a JSON search request
    ({"query": ..., "k": ..., "filters": ...}); --json then prints one JSON line per query.
    """
    from rag.cli.terminal import plain, print_search, read_batch, search_requests, write_json

    s = settings()
    filters = _filters(document, kind, date_from, date_to)
    with reported(), _client(s, url) as client:
        if query is not None and query != "-" and file is None:
            response = client.search(query, k, filters)
            if as_json:
                write_json(response)
            else:
                print_search(out, response)
            return
        requests = search_requests(read_batch(file), k, filters)
        for request, response in _in_batches(requests, client.search_batch):
            if as_json:
                write_json({"query": request.get("query"), **plain(response)}, lines=True)
            else:
                print_search(out, response, query=str(request.get("query")))


def _in_batches(items: list[T], answer: Callable[[list[T]], list[R]]) -> Iterator[tuple[T, R]]:
    """Each item with its answer, asking `answer` about BATCH items at a time (the API's limit)."""
    for start in range(0, len(items), BATCH):
        part = items[start : start + BATCH]
        yield from zip(part, answer(part), strict=True)


@app.command("eval")
def evaluate(
    questions: Annotated[
        list[Path],
        typer.Option(exists=True, dir_okay=False, help="JSONL questions file (repeat to pool several sets)."),
    ],
    per_question: Annotated[
        bool, typer.Option("--per-question", help="Also print a table of ranks.")
    ] = False,
    answers: Annotated[
        bool, typer.Option("--answers", help="Score answers: gold contained, abstention, marker validity.")
    ] = False,
    backend: Annotated[str | None, typer.Option(help="Backend for --answers (default RAG_BACKEND).")] = None,
    against: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE: compare, paired on the same questions, with this setting changed: a RAG_ "
            "setting (chunk_size=160, dense_weight=0.5) or an answer backend option (min_score=0.3). "
            "Repeatable."
        ),
    ] = None,
    cv: Annotated[
        int | None,
        typer.Option(
            min=2,
            max=20,
            help="Also choose settings by this many folds of cross-validation and print "
            "their held-out figures (fusion and dense weight; with --answers, the extractive blend and "
            "threshold).",
        ),
    ] = None,
    cv_by_set: Annotated[
        bool,
        typer.Option(
            "--cv-by-set",
            help="Also choose the same settings with each question file held out in turn (chosen on "
            "the others, scored on it), and print what each held-out set got.",
        ),
    ] = False,
) -> None:
    """Retrieval figures (hybrid, BM25 alone, dense alone, and plain BM25 over 1,000-character windows)
    with 95% intervals per question kind and set, as JSON; --answers scores answers instead."""
    from rag.eval.quality import retrieval_report
    from rag.eval.retrieval import evaluate as run
    from rag.eval.retrieval import load_questions
    from rag.service import retriever_variant

    s = settings()
    changed, options = _overrides(against or [])
    if options and not answers:
        err.print(
            f"[red]--against {', '.join(options)}: not a RAG_ setting[/red] "
            "(backend options such as min_score apply with --answers)"
        )
        raise typer.Exit(2)
    with reported():
        qs = [q for path in questions for q in load_questions(path)]
        retriever = _retriever(s)
        other = retriever_variant(settings(**changed), retriever) if changed else None
        if answers:
            _evaluate_answers(s, retriever, qs, backend, changed, options, other, cv=cv, cv_by_set=cv_by_set)
            return
        report = retrieval_report(retriever, qs, cv=cv, against=other, cv_by_set=cv_by_set)
    if per_question:
        reports = {mode: run(retriever, qs, mode) for mode in ("hybrid", "bm25", "dense")}
        table = Table("id", "kind", *reports, title="rank of the first passage holding the evidence")
        for q in qs:
            if q.answerable:
                table.add_row(q.id, q.kind or "", *(str(r.ranks[q.id] or "-") for r in reports.values()))
        err.print(table)
    report["index"] = {k: retriever.index.manifest[k] for k in ("model", "chunking", "chunks", "documents")}
    if changed or options:
        report["against_settings"] = {**changed, **options}
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


def _overrides(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split --against KEY=VALUE pairs into settings (RAG_* fields) and backend options."""
    changed: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lower().removeprefix("rag_")
        if not sep or not key:
            err.print(f"[red]--against takes KEY=VALUE, got {pair!r}[/red]")
            raise typer.Exit(2)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        (changed if key in Settings.model_fields else options)[key] = value
    return changed, options


@app.command()
def cite(
    text: Annotated[str | None, typer.Argument(help="The quote; '-' or none reads one per line.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="Closest passages if none match exactly.")] = 5,
    file: FileOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Where a quote comes from: its exact occurrences, or else the closest passages.

    With --file (or no TEXT, reading stdin) each line is a quote, or a JSON cite request
    ({"text": ..., "k": ...}), looked up 100 at a time; --json then prints one JSON line per quote.
    """
    from rag.cli.terminal import plain, print_matches, read_batch, write_json

    s = settings()
    with reported(), _client(s, url) as client:
        if text is not None and text != "-" and file is None:
            matches = client.cite(text, k)
            if as_json:
                write_json({"matches": plain(matches)})
            else:
                print_matches(out, matches)
            return
        answer = partial(client.cite_batch, k=k)
        for item, matches in _in_batches(list(read_batch(file)), answer):
            quote = item if isinstance(item, str) else str(item.get("text", ""))
            if as_json:
                write_json({"text": quote, "matches": plain(matches)}, lines=True)
            else:
                print_matches(out, matches, quote=quote)


@app.command()
def documents(
    document_id: Annotated[str | None, typer.Argument(help="Show this post with its comment tree.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the posts, or show one post with its comments and replies."""
    from rag.cli.terminal import plain, print_document, print_documents, write_json

    s = settings()
    with reported(), _client(s, url) as client:
        if document_id is None:
            docs = client.documents()
            if as_json:
                write_json({"documents": plain(docs)})
            else:
                print_documents(out, docs)
            return
        doc = client.document(document_id)
        if as_json:
            write_json(doc)
        else:
            print_document(out, doc)


@app.command()
def passage(
    passage_id: Annotated[str, typer.Argument(help="A passage id from search or cite results.")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a passage with its citation and the text around it."""
    from rag.cli.terminal import print_passage, write_json

    s = settings()
    with reported(), _client(s, url) as client:
        found = client.passage(passage_id)
    if as_json:
        write_json(found)
    else:
        print_passage(out, found)


def _evaluate_answers(
    s: Settings,
    retriever: Any,
    qs: Any,
    backend: str | None,
    changed: dict[str, Any],
    options: dict[str, Any],
    other: Any,
    *,
    cv: int | None,
    cv_by_set: bool,
) -> None:
    from rag.answer.answering import Answerer
    from rag.eval.quality import answer_report

    answerer = Answerer.for_backend(backend, s, retriever)
    against = None
    if changed or options:
        s2 = settings(**changed)
        against = Answerer.for_backend(backend, s2, other or retriever, options=options or None)
    report = answer_report(answerer, qs, cv=cv, against=against, cv_by_set=cv_by_set)
    if against is not None:
        report["against_settings"] = {**changed, **options}
    sys.stdout.write(json.dumps({"answers": report}, indent=2) + "\n")


@app.command()
def ask(
    question: Annotated[str | None, typer.Argument(help="The question ('-' or none: read).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=20, help="Passages the answer may draw on.")] = 5,
    backend: Annotated[str | None, typer.Option(help="extractive, openai or local (RAG_BACKEND).")] = None,
    file: FileOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the archive, citing passages by number (streams as it is written).

    --json prints what POST /v1/ask returns; with --file (or no QUESTION, reading stdin) each line is
    a question, or a JSON ask request ({"question": ..., "k": ...}), and --json prints JSON lines.
    """
    from rag.cli.terminal import plain, print_answer_sources, read_batch, write_json
    from rag.client import Answer

    s = settings()
    with reported(), _client(s, url) as client:
        if question is not None and question != "-" and file is None:
            if as_json:
                write_json(client.ask(question, k, backend))
                return
            for item in client.ask_stream(question, k, backend):
                if isinstance(item, Answer):
                    print_answer_sources(out, err, item, question)
                else:
                    out.print(item, end="", markup=False, highlight=False, soft_wrap=True)
            return
        for item in read_batch(file):
            request = {"question": item} if isinstance(item, str) else item
            text = str(request.get("question", ""))
            answer = client.ask(
                text,
                int(request.get("k", k)),
                request.get("backend", backend),
                request.get("filters"),
                request.get("options"),
            )
            if as_json:
                write_json({"question": text, **plain(answer)}, lines=True)
            else:
                out.print(f"[bold]{escape(text)}[/bold]")
                out.print(answer.answer, markup=False, highlight=False)
                print_answer_sources(out, err, answer, text)
                out.print()


if __name__ == "__main__":
    app()
