"""The no-systemd supervisor and the systemd unit treat each exit code the same way (errors.py):
0 not restarted (`exited`) · 2 never restarted (`failed`) · anything else restarted with backoff, for good.

Each path runs through the real supervisor daemon; the commands are real `edge-gmm run` invocations where a
run can produce the code cheaply, else a small Python script that exits with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_gmm.devices.deploy import supervisor
from edge_gmm.devices.deploy.supervisor import Paths, read_state
from edge_gmm.devices.deploy.unit import render_unit
from test_deploy_units import _spec
from test_loop_faults import _failing_model_bundle
from test_loop_kit import small_dataset, tiny_bundle  # noqa: F401  (fixtures)

FAST = ["--restart-delay", "0.3", "--restart-max-delay", "1.2"]  # the defaults are 5 s → 60 s
# Appends its start time to a file; exits with CODE on its first FAILS starts, then stays up.
SCRIPT = ("import sys, time\n"
          "log, code, fails = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
          "with open(log, 'a') as f: f.write(f'{time.monotonic()}\\n')\n"
          "if len(open(log).read().split()) > fails: time.sleep(60)\n"
          "sys.exit(code)\n")


def sup(run_dir: Path, action: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "edge_gmm.devices.deploy.supervisor", action, "--run-dir", str(run_dir),
                          *args], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_state(run_dir: Path, cond, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(Paths(str(run_dir), "edge-gmm"))
        if cond(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    yield d
    sup(d, "stop")


def test_a_clean_stop_is_not_restarted(run_dir, tmp_path, tiny_bundle, small_dataset):  # noqa: F811
    sup(run_dir, "start", "--log", str(tmp_path / "l.log"), *FAST, "--", sys.executable, "-m", "edge_gmm.cli.main",
        "run", "--bundle", str(tiny_bundle), "--sources", f"replay://{small_dataset}", "--mqtt", "none",
        "--max-windows", "2", "--speed", "max")
    state = wait_state(run_dir, lambda s: s["state"] not in ("starting", "running"))
    assert (state["state"], state["last_exit"], state["restarts"]) == ("exited", 0, 0), (tmp_path / "l.log").read_text()


def test_a_user_error_is_never_restarted(run_dir, tmp_path, small_dataset):  # noqa: F811
    sup(run_dir, "start", "--log", str(tmp_path / "l.log"), *FAST, "--", sys.executable, "-m", "edge_gmm.cli.main",
        "run", "--bundle", str(tmp_path / "no-such-bundle"), "--sources", f"replay://{small_dataset}", "--mqtt", "none")
    state = wait_state(run_dir, lambda s: s["state"] not in ("starting", "running"))
    assert (state["state"], state["last_exit"], state["restarts"]) == ("failed", 2, 0)
    time.sleep(0.6)  # longer than the first restart delay: still not restarted
    assert read_state(Paths(str(run_dir), "edge-gmm"))["restarts"] == 0
    assert "not restarting" in (tmp_path / "l.log").read_text()


@pytest.mark.parametrize("code", [75, 1])
def test_a_runtime_failure_or_a_bug_is_restarted_with_backoff(run_dir, tmp_path, code):
    starts = tmp_path / "starts"
    sup(run_dir, "start", "--log", str(tmp_path / "l.log"), *FAST, "--", sys.executable, "-c", SCRIPT, str(starts),
        str(code), "3")
    state = wait_state(run_dir, lambda s: s["restarts"] == 3 and s["state"] == "running"
                       and len(starts.read_text().split()) == 4)  # the 4th start has begun
    assert (state["state"], state["restarts"], state["last_exit"]) == ("running", 3, code)
    log = (tmp_path / "l.log").read_text()
    assert [line for line in log.splitlines() if "restarting in" in line] == [
        "[supervisor] restarting in 0.3 s", "[supervisor] restarting in 0.6 s", "[supervisor] restarting in 1.2 s"]
    t = [float(x) for x in starts.read_text().split()]
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert len(gaps) == 3 and all(g >= d for g, d in zip(gaps, (0.3, 0.6, 1.2))), gaps


def test_a_real_restartable_run_is_restarted_and_never_given_up(run_dir, tmp_path, tiny_bundle, small_dataset):  # noqa: F811
    """`edge-gmm run` whose model fails on every window exits 75, again and again: the supervisor keeps going
    past the old limit of 5 starts in 60 s."""
    bundle = _failing_model_bundle(tmp_path / "fails", tiny_bundle)
    sup(run_dir, "start", "--log", str(tmp_path / "l.log"), "--restart-delay", "0.05", "--restart-max-delay", "0.1",
        "--", sys.executable, "-m", "edge_gmm.cli.main", "run", "--bundle", bundle, "--sources",
        f"replay://{small_dataset}?loop=1", "--mqtt", "none", "--speed", "max")
    state = wait_state(run_dir, lambda s: s["restarts"] >= 6 or s["state"] in ("failed", "exited"), timeout=40)
    assert state["restarts"] >= 6 and state["state"] in ("running", "restarting") and state["last_exit"] == 75
    assert "inference failing" in (tmp_path / "l.log").read_text()


def test_a_healthy_run_resets_the_backoff():
    assert supervisor._next_delay(0.3, ran_s=0.1, first=0.3, most=1.2) == 0.6
    assert supervisor._next_delay(1.2, ran_s=0.1, first=0.3, most=1.2) == 1.2  # capped
    assert supervisor._next_delay(1.2, ran_s=1.2, first=0.3, most=1.2) == 0.3  # ran as long as the cap: reset


def test_the_systemd_unit_and_the_supervisor_agree():
    unit = render_unit(_spec())
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["Restart"] == "on-failure" and keys["RestartPreventExitStatus"] == str(supervisor.NO_RESTART_EXIT)
    assert keys["StartLimitIntervalSec"] == "0" and "StartLimitBurst" not in keys  # never gives up for good
    assert float(keys["RestartSec"]) == supervisor.RESTART_DELAY_S
    assert float(keys["RestartMaxDelaySec"]) == supervisor.RESTART_MAX_DELAY_S
