"""The user's path: `bridge emulate --pty` in one process, `bridge monitor` and `record` on its port."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_gmm.data.format import Dataset

EDGE_GMM = [sys.executable, "-m", "edge_gmm.cli.main"]


@pytest.fixture
def emulator(tmp_path):
    """A virtual MCU subprocess on a pty linked at tmp/ttyMCU; stopped by PID."""
    procs = []

    def start(*extra, seconds=8):
        link = tmp_path / f"tty{len(procs)}"
        p = subprocess.Popen([*EDGE_GMM, "bridge", "emulate", "--pty", "--link", str(link), "--seconds", str(seconds), *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        first = p.stdout.readline()  # the port line comes first and is flushed at once
        assert f"virtual MCU port: {link}" in first, first + p.stderr.read()
        return link, p

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(5)


def test_monitor_reports_rates_and_counts_injected_faults(emulator, cli):
    link, _ = emulator("--faults", "bitflip,drop,garbage", "--fault-rate", "0.05", "--seed", "4")
    code, out, err = cli("bridge", "monitor", link, "--seconds", "2.5", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["sensors"]["imu"]["nominal_rate_hz"] == 200 and r["sensors"]["env"]["channels"] == 2
    assert r["sensors"]["imu"]["rate_hz"] == pytest.approx(200, rel=0.15)
    assert r["frames"] > 50
    assert r["crc_errors"] + r["malformed"] > 0 and r["gaps"] > 0 and r["resyncs"] > 0 and r["bytes_dropped"] > 0


def test_record_writes_a_dataset_with_labels(emulator, cli, tmp_path):
    link, _ = emulator("--label", "bearing_wear")
    out = tmp_path / "rec"
    code, text, err = cli("record", "--sources", link, "--out", out, "--seconds", "2", "--label", "state=bearing_wear",
                          "--classes", "state=normal,bearing_wear", "--session-id", "bearing-1", "--json")
    assert code == 0, err
    ds = Dataset.open(out)
    assert {s.name for s in ds.sensors} == {"imu", "env"}
    assert set(ds.tasks[0].labels) == {"normal", "bearing_wear"}
    s = ds.load_session("bearing-1")
    assert s.labels == {"state": "bearing_wear"}
    imu = s.streams["imu"]
    assert imu.x.shape[1] == 6 and len(imu) > 250 and np.all(np.diff(imu.t) > 0)
    # a second session appended to the same dataset
    code, _, err = cli("record", "--sources", link, "--out", out, "--seconds", "1", "--label", "state=normal", "--append", "--session-id", "normal-1")
    assert code == 0, err
    assert sorted(Dataset.open(out).session_ids()) == ["bearing-1", "normal-1"]


def test_user_errors_exit_2_with_one_line(cli, tmp_path):
    code, _, err = cli("bridge", "monitor", tmp_path / "ttyNOPE", "--seconds", "1")
    assert code == 2 and "cannot open serial port" in err and "Traceback" not in err
    code, _, err = cli("bridge", "emulate", "--faults", "lightning", "--seconds", "1")
    assert code == 2 and "unknown fault 'lightning'" in err
    code, _, err = cli("record", "--sources", "loop://", "--out", tmp_path / "x", "--seconds", "0.3", "--label", "state=a",
                       "--start-timeout", "0.5")
    assert code == 2 and "loop://: not ready within 0.5 s (no sensor descriptor from the MCU)" in err
    assert not (tmp_path / "x").exists()
