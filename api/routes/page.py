"""The chat page: GET / serves a hand-written HTML page, and /static/* its script and stylesheet.

No build step and no external URLs: the three files in `api/static/` are the whole front end, and
a Content-Security-Policy holds the page to this origin, so it works offline and corpus text that
slipped into markup could not load or run anything. The page talks only to `/v1/ask` (streamed,
with the conversation's earlier turns as `history`) and `/v1/passages/{id}`, and keeps the
conversation in the tab's sessionStorage.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

# Everything from this origin only; `data:` for the empty favicon that stops a /favicon.ico 404.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["page"], include_in_schema=False)


def _file(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)


@router.get("/")
@router.head("/")
def index() -> FileResponse:
    """The chat page."""
    response = _file("index.html", "text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = CSP
    return response


# One route per file rather than a path parameter: nothing else in the package can be served,
# and any other /static/ path gets the ordinary JSON 404.
@router.get("/static/app.js")
def script() -> FileResponse:
    """The page's script."""
    return _file("app.js", "text/javascript; charset=utf-8")


@router.get("/static/app.css")
def stylesheet() -> FileResponse:
    """The page's stylesheet."""
    return _file("app.css", "text/css; charset=utf-8")
