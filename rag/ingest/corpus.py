"""Parse the blog's plain-text export into posts, comments and replies with exact character offsets.

Two layouts occur, and both are read:

*Structured* (most files)::

    Friday 22 February 2019          <- date line (weekday optional, comma optional)
    If Only Probation Wasn't Broken! <- title
    ...body...
    20 comments:                     <- N counts comments plus replies
      1. first comment line          <- comment: indent 2, "N. "
        continuation                 <- indent 4
        ReplyDelete                  <- end of a comment's text
        Replies
        1. a reply                   <- reply: indent 4, "N. ", only after "Replies"
          continuation               <- indent 6
          Delete                     <- end of a reply's text

*Flattened* (file 001): no date line, no count line, no indentation; the ``ReplyDelete`` and
``Delete`` markers are glued to the start of the line that follows them. The rule we apply:
a line starting with ``ReplyDelete`` closes a top-level comment and ``Delete`` closes a reply (as
Blogger prints "Reply Delete" under a comment and "Delete" under each reply); the text glued after
the marker opens the next item. The first comment is taken to be the last line before the first
marker (the body and the first comment are not otherwise separated), and with no date line the first
line serves as the title while staying part of the body.

Every node keeps ``start``/``end`` offsets into the decoded file text, so ``raw[start:end]`` is the
node's text up to indentation. This module only parses; chunking and indexing live elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args

from rag.errors import CorpusFormatError

logger = logging.getLogger(__name__)

Kind = Literal["post", "comment", "reply"]
KINDS: tuple[Kind, ...] = get_args(Kind)  # the one list of node kinds

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"^\s*(?:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day,?\s+)?(\d{{1,2}})\s+({_MONTHS})\s+(\d{{4}})\s*$"
)
_COUNT = re.compile(r"^(\d+|No) comments?:\s*$")
_COMMENT = re.compile(r"^  (\d+)\.(?: |$)")
_REPLY = re.compile(r"^    (\d+)\.(?: |$)")
_GLUED = re.compile(r"^(ReplyDelete|Delete)")
_INDENT_NL = re.compile(r"[ \t\r]*\n[ \t]*")
_BLANK_LINES = re.compile(r"\n{3,}")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def clean_text(raw: str) -> str:
    """Strip per-line indentation and surplus blank lines: the text a reader sees."""
    return _BLANK_LINES.sub("\n\n", _INDENT_NL.sub("\n", raw)).strip()


@dataclass(frozen=True)
class Node:
    """One addressable unit of a post: its body, a comment, or a reply to a comment."""

    kind: Kind
    start: int
    end: int
    comment: int | None = None
    reply: int | None = None
    # sha256 (16 hex digits) of the node's text as a reader sees it; says what changed between builds
    content_hash: str = ""

    def label(self) -> str:
        return node_label(self.kind, self.comment, self.reply)


def node_label(kind: str, comment: int | None, reply: int | None) -> str:
    """Human label of a node, wherever one is shown: 'post', 'comment 4', 'reply 2 to comment 4'."""
    if kind == "post":
        return "post"
    if kind == "comment":
        return f"comment {comment}"
    return f"reply {reply} to comment {comment}"


@dataclass
class Document:
    """A parsed post file: metadata, raw text, and its nodes in file order (body first)."""

    id: str
    source: str
    title: str
    date: str | None
    raw: str
    nodes: list[Node] = field(default_factory=list)
    declared_count: int | None = None
    warnings: list[str] = field(default_factory=list)

    def text(self, node: Node) -> str:
        return clean_text(self.raw[node.start : node.end])

    @property
    def body(self) -> Node:
        return self.nodes[0]

    @property
    def comments(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "comment"]

    @property
    def replies(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "reply"]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8")).hexdigest()

    def parent(self, node: Node) -> Node | None:
        """The comment a reply answers; None for anything else."""
        if node.kind != "reply":
            return None
        return next(n for n in self.nodes if n.kind == "comment" and n.comment == node.comment)


@dataclass
class _Open:
    """A node being read: where its text starts and the end of its last non-blank line so far."""

    kind: Kind
    comment: int | None
    reply: int | None
    start: int
    end: int

    def freeze(self) -> Node:
        return Node(self.kind, self.start, max(self.start, self.end), self.comment, self.reply)


def _lines(raw: str) -> Iterator[tuple[int, int, str]]:
    """(line number from 1, offset of line start, line without its newline)."""
    offset = 0
    for number, line in enumerate(raw.splitlines(keepends=True), start=1):
        yield number, offset, line.rstrip("\r\n")
        offset += len(line)


def _trim(raw: str, start: int, end: int) -> tuple[int, int]:
    """Shrink [start, end) to exclude surrounding whitespace."""
    while start < end and raw[start].isspace():
        start += 1
    while end > start and raw[end - 1].isspace():
        end -= 1
    return start, end


def _iso_date(match: re.Match[str]) -> str:
    day, month, year = match.groups()
    return datetime.strptime(f"{day} {month} {year}", "%d %B %Y").date().isoformat()


def parse_text(raw: str, source: str) -> Document:
    """Parse one file's text. Raises CorpusFormatError naming `source` and the line."""
    lines = list(_lines(raw))
    content = [(n, o, t) for n, o, t in lines if t.strip()]
    if not content:
        raise CorpusFormatError(source, 1, "file is empty")
    doc_id = Path(source).stem

    first_no, first_off, first = content[0]
    date_match = _DATE.match(first)
    if date_match:
        if len(content) < 2:
            raise CorpusFormatError(source, first_no, "a date line but no title after it")
        date: str | None = _iso_date(date_match)
        title_no, title_off, title_line = content[1]
        title = title_line.strip()
        body_start = title_off + len(title_line)
    else:
        # No date line (as in file 001): the first line stands in as the title and stays in the body.
        date, title, body_start = None, first.strip(), first_off

    count_at = next(((n, o, t) for n, o, t in lines if _COUNT.match(t)), None)
    doc = Document(id=doc_id, source=source, title=title, date=date, raw=raw)
    if count_at is not None:
        count_no, count_off, count_line = count_at
        word = _COUNT.match(count_line).group(1)  # type: ignore[union-attr]
        doc.declared_count = 0 if word == "No" else int(word)
        doc.nodes.append(Node("post", *_trim(raw, body_start, count_off)))
        doc.nodes.extend(_parse_structured(raw, source, lines, count_no))
    elif any(_GLUED.match(t) for _, _, t in lines):
        doc.nodes.extend(_parse_flattened(raw, source, lines, body_start))
    else:
        doc.nodes.append(Node("post", *_trim(raw, body_start, len(raw))))

    doc.nodes = [replace(n, content_hash=content_hash(clean_text(raw[n.start : n.end]))) for n in doc.nodes]
    found = len(doc.nodes) - 1
    if doc.declared_count is not None and found != doc.declared_count:
        doc.warnings.append(
            f"{source}:{count_at[0] if count_at else 1}: header says {doc.declared_count} comments "
            f"(comments plus replies) but {found} were found"
        )
    return doc


def _parse_structured(raw: str, source: str, lines: list[tuple[int, int, str]], count_no: int) -> list[Node]:
    nodes: list[Node] = []
    current: _Open | None = None
    comment_no = 0
    reply_no = 0
    in_replies = False

    def close() -> None:
        nonlocal current
        if current is not None:
            nodes.append(current.freeze())
            current = None

    for number, offset, line in lines:
        if number <= count_no:
            continue
        stripped = line.strip()
        comment_match = _COMMENT.match(line)
        reply_match = _REPLY.match(line) if in_replies else None
        # A number only opens a node when it is the next in sequence: a numbered list inside a
        # comment must not be mistaken for a new comment.
        if comment_match and int(comment_match.group(1)) == comment_no + 1:
            close()
            comment_no, reply_no, in_replies = comment_no + 1, 0, False
            start = offset + comment_match.end()
            current = _Open("comment", comment_no, None, start, start)
            if line[comment_match.end() :].strip():
                current.end = offset + len(line.rstrip())
        elif reply_match and int(reply_match.group(1)) == reply_no + 1:
            close()
            reply_no += 1
            start = offset + reply_match.end()
            current = _Open("reply", comment_no, reply_no, start, start)
            if line[reply_match.end() :].strip():
                current.end = offset + len(line.rstrip())
        elif stripped == "ReplyDelete" and comment_no:
            close()
        elif stripped == "Replies" and comment_no and current is None:
            in_replies = True
        elif stripped == "Delete" and comment_no:
            close()
        elif not stripped:
            continue
        elif current is not None:
            current.end = offset + len(line.rstrip())
        elif comment_no == 0:
            raise CorpusFormatError(
                source, number, f"text after the comment count but before comment 1: {stripped[:60]!r}"
            )
        else:
            # Text after a node's closing marker: keep it with the node it follows rather than lose it.
            last = nodes[-1]
            nodes[-1] = Node(last.kind, last.start, offset + len(line.rstrip()), last.comment, last.reply)
    close()
    return [Node(n.kind, *_trim(raw, n.start, n.end), n.comment, n.reply) for n in nodes]


def _parse_flattened(raw: str, source: str, lines: list[tuple[int, int, str]], body_start: int) -> list[Node]:
    marker_lines = [i for i, (_, _, t) in enumerate(lines) if _GLUED.match(t)]
    first_marker = marker_lines[0]
    # The first comment is the last non-blank line before the first marker.
    first_item = next((i for i in range(first_marker - 1, -1, -1) if lines[i][2].strip()), None)
    if first_item is None or lines[first_item][1] < body_start:
        raise CorpusFormatError(source, lines[first_marker][0], "a comment marker before any text")
    body = Node("post", *_trim(raw, body_start, lines[first_item][1]))

    # Items are the text between consecutive markers; the marker that closes an item says its kind.
    items: list[tuple[int, int]] = []  # (start offset, end offset) of each item's text
    closers: list[str] = []
    item_start = lines[first_item][1]
    for i in marker_lines:
        _, offset, line = lines[i]
        marker = _GLUED.match(line).group(1)  # type: ignore[union-attr]
        items.append((item_start, offset))
        closers.append(marker)
        item_start = offset + len(marker)
    tail = _trim(raw, item_start, len(raw))
    if tail[1] > tail[0]:
        items.append(tail)
        closers.append("ReplyDelete")  # an unclosed last item reads as a comment

    nodes: list[Node] = [body]
    comment_no = reply_no = 0
    for (start, end), closer in zip(items, closers, strict=True):
        start, end = _trim(raw, start, end)
        if start == end:
            continue
        if closer == "ReplyDelete" or comment_no == 0:
            comment_no, reply_no = comment_no + 1, 0
            nodes.append(Node("comment", start, end, comment_no))
        else:
            reply_no += 1
            nodes.append(Node("reply", start, end, comment_no, reply_no))
    return nodes


def parse_file(path: Path) -> Document:
    """Read and parse one post file. A file that cannot be read (permissions, a vanished file), is
    not UTF-8 (a binary, or text cut off mid-character) or holds a NUL byte (binary data that happens
    to decode) raises CorpusFormatError naming the file and line, like any other bad file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusFormatError(path.name, 1, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        # Decoding the bytes as they are keeps "\r\n", so offsets index the file's text exactly.
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CorpusFormatError(path.name, line, f"not UTF-8 text ({exc.reason})") from exc
    if "\0" in raw:
        line = raw[: raw.index("\0")].count("\n") + 1
        raise CorpusFormatError(path.name, line, "binary data (a NUL byte), not a post export")
    return parse_text(raw, path.name)


@dataclass
class Corpus:
    """The parsed documents of a directory, and the files that failed with why."""

    documents: list[Document]
    errors: list[CorpusFormatError]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for doc in self.documents:
            digest.update(f"{doc.source}\0{doc.fingerprint}\n".encode())
        return digest.hexdigest()

    @property
    def warnings(self) -> list[str]:
        return [w for d in self.documents for w in d.warnings]


def is_post_name(name: str) -> bool:
    """Whether a file of this name is a post: a plain-text export (``*.txt``), not hidden (a hidden
    name is a file still being written, to be renamed into place, or an editor's)."""
    return name.endswith(".txt") and not name.startswith(".")


def corpus_files(directory: Path) -> list[Path]:
    """The post files of a directory, in name order (`is_post_name`)."""
    return sorted(p for p in directory.glob("*.txt") if is_post_name(p.name) and p.is_file())


def load_corpus(directory: Path, files: Iterable[Path] | None = None) -> Corpus:
    """Parse every post file in `directory`; a file that fails is reported and skipped."""
    documents: list[Document] = []
    errors: list[CorpusFormatError] = []
    for path in files if files is not None else corpus_files(directory):
        try:
            documents.append(parse_file(path))
        except CorpusFormatError as exc:
            logger.warning("skipping %s", exc)
            errors.append(exc)
    return Corpus(documents, errors)
