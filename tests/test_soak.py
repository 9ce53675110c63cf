"""scripts/soak.py in its short form: 16 clients on every kind of request against a real `rag serve`
on 127.0.0.1 for 90 seconds, memory sampled every 10. No request may get an answer other than the
one its operation expects, and the server's resident memory may not keep climbing: the second half
of the run may add at most SECOND_HALF_MB. The bound is far above what a server that levels off
adds (tens of MB, README: Memory over time) and far below what a per-request leak at this load
would (a 35 KB leak at ~40 requests/s adds ~80 MB a minute); it says nothing about speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"
SECOND_HALF_MB = 200


def test_soak_short_form_every_operation_answers_and_memory_levels_off(env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--minutes", "1.5", "--interval", "10", "--clients", "16"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    print(run.stderr)  # the curve, for the test log
    assert report["errors"] == {}, report["errors"]
    assert all(n > 0 for n in report["by_operation"].values()), report["by_operation"]
    curve = report["curve"]
    assert len(curve) >= 8, curve
    middle, last = curve[len(curve) // 2], curve[-1]
    assert last["rss_mb"] - middle["rss_mb"] < SECOND_HALF_MB, curve
