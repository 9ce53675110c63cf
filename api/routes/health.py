"""Liveness and readiness probes: `async`, so they answer without waiting for a worker thread."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import AppState, StateDep
from api.models import Readiness
from rag.ingest.runs import utc

router = APIRouter(tags=["health"])


# HEAD too (kept out of the schema): load balancers and `curl -I` probe with it.
@router.get("/healthz")
@router.head("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about the index)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Index not loaded yet, or failed to load."}},
)
@router.head("/readyz", include_in_schema=False)
async def readyz(state: StateDep) -> JSONResponse:
    """200 once a query can be answered, naming the index served; 503 while loading or after a failed load.
    Either way it says whether this process watches the data folder and how the last ingest ended."""
    ingest = _ingest(state)
    serving = state.serving  # read once: a new index may be swapped in meanwhile
    if serving is None:
        if state.error is not None:
            return JSONResponse({"status": "error", "detail": state.error.message, **ingest}, status_code=503)
        return JSONResponse({"status": "loading", **ingest}, status_code=503)
    manifest = serving.retriever.index.manifest
    return JSONResponse(
        {
            "status": "ready",
            "documents": manifest["documents"],
            "chunks": manifest["chunks"],
            "index_version": serving.version,
            **ingest,
        }
    )


def _ingest(state: AppState) -> dict[str, Any]:
    status = state.ingest
    last = status.last
    return {
        "watching": status.watching,
        "ingesting_since": utc(status.running_since) if status.running_since is not None else None,
        # The error message stays in the server log: it may hold the server's paths.
        "last_ingest": {k: v for k, v in last.to_json().items() if k != "error"} if last else None,
    }
