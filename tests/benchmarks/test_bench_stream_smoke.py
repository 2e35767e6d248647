"""bench_stream.py (issue 15) keeps working: a tiny student exported with its split, the cost rows (both modes
make the same predictions; streaming does fewer FLOPs per prediction at a 0.1 s hop) and a short live run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_streaming_costs_and_a_live_run_come_out():
    r = subprocess.run([sys.executable, "benchmarks/bench_stream.py", "--preset", "student-tiny", "--hops", "0.1",
                        "--seconds", "3", "--live-seconds", "2.5", "--no-publish", "--json"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout[r.stdout.index('{\n "cost"'):])
    (cost,) = rows["cost"]
    whole, stream = map(int, cost["predictions whole/stream"].split("/"))
    assert whole == stream > 10, cost  # ~3 s of data at 10 predictions/s, the first after a full window
    assert cost["FLOPs ×"] > 1.0 and cost["stream MFLOP/pred"] > 0, cost
    assert 0 < cost["of which cache"] < cost["stream CPU ms/s"], cost
    (live,) = [x for x in rows["live"] if x["inference"] == "streaming"]
    assert live["pred/s"] > 0 and live["dropped"] == 0 and live["fusion p50 ms"] > 0, live
