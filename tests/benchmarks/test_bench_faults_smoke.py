"""bench_faults.py (issue 12) keeps working: one loop SIGKILL through the real CLI, mosquitto and subscriber,
with nothing lost (seq continuous across the kill)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_killed_loop_loses_nothing():
    r = subprocess.run([sys.executable, "benchmarks/bench_faults.py", "--only", "loop-kill", "--tries", "1",
                        "--no-publish", "--json"], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(r.stdout[r.stdout.index("[\n"):])
    assert row["sent"] > 0 and row["lost"] == 0 and row["received"] == row["sent"], row
    assert "exit 0" in row["outcome"], row
