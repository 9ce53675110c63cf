"""scripts/loadtest.py in its 10-second form: 16 clients against a real `rag serve` on 127.0.0.1
mixing search, ask, cite and passage lookups; no request may fail and every /healthz probe made
while the load runs must be answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "loadtest.py"


def test_loadtest_16_clients_10_s_no_errors_and_health_always_answers(env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--clients", "16", "--duration", "10"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["errors"] == {}, report
    assert all(op["requests"] > 0 and op["errors"] == 0 for op in report["operations"].values()), report
    assert report["healthz"]["failed"] == 0 and report["healthz"]["probes"] >= 20, report["healthz"]
    assert report["server_rss_mb"]["before"] and report["server_rss_mb"]["after"]
