"""Write a post file in the blog's export format, for tests that add posts to a copy of data/."""

from __future__ import annotations

from pathlib import Path


def post_text(title: str, date: str, body: list[str], comments: list[tuple[str, list[str]]]) -> str:
    """A structured post file: date line, title, body paragraphs, then comments with their replies.

    `date` is as the blog prints it ("Friday 1 March 2019"); each comment is (text, [reply texts]).
    """
    count = len(comments) + sum(len(replies) for _, replies in comments)
    lines = [date, "", title, "", *[line for p in body for line in (p, "")], f"{count} comments:"]
    for n, (text, replies) in enumerate(comments, start=1):
        lines += [f"  {n}. {text}", "    ReplyDelete"]
        if replies:
            lines.append("    Replies")
            for r, reply in enumerate(replies, start=1):
                lines += [f"    {r}. {reply}", "", "      Delete"]
    return "\n".join(lines) + "\n"


def write_post(data_dir: Path, name: str, phrase: str) -> Path:
    """A short plausible post holding `phrase` once, in its second comment's reply."""
    path = data_dir / name
    path.write_text(
        post_text(
            "Community Payback Under Review",
            "Tuesday, 9 March 2021",
            [
                "The Ministry of Justice has announced a review of unpaid work placements across England.",
                "Staff tell us the backlog of hours has grown since the courts reopened last spring.",
            ],
            [
                ("Placements in our area have been cut by half and nobody has explained why.", []),
                (
                    "Supervisors are leaving faster than they can be replaced.",
                    [f"Ours was told the scheme would be rebranded as {phrase} by the summer."],
                ),
            ],
        ),
        encoding="utf-8",
    )
    return path
