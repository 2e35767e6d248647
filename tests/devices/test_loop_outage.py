"""A sensor source dies mid-run: predictions go on with that modality `missing`, and it is used again when it returns.

Real parts: the virtual MCU (`edge-gmm bridge emulate --pty --link`) as a separate process streaming imu and
env over a pty, the serial bridge reading it, a live synthetic microphone, real mosquitto and mosquitto_sub.
Killing the emulator closes the pty (as unplugging a board does); starting it again re-creates the link.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time

from edge_gmm.devices.job import RunSettings, run_device
from edge_gmm.mqtt.payload import validate
from test_loop_kit import REPO, MqttSub, tiny_bundle, wait_until  # noqa: F401  (fixture)


def start_mcu(link, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_gmm.cli.main", "bridge", "emulate", "--pty", "--link", str(link),
                             "--seconds", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)


def wait_for(path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def runs(states: list[str]) -> list[str]:
    """['ok', 'ok', 'missing', 'ok'] -> ['ok', 'missing', 'ok']"""
    return [k for k, _ in itertools.groupby(states)]


def test_a_dead_mcu_is_reported_missing_while_predictions_go_on_and_it_comes_back(mosquitto, tiny_bundle, tmp_path):  # noqa: F811
    link = tmp_path / "ttyMCU"
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"imu: {link}\nenv: {link}\naudio: synth://machine-health?label=normal\n")  # camera: not fed
    sub = MqttSub(mosquitto.port, "edge-gmm/v1/dev3/prediction")
    mcus = [start_mcu(link, seconds=60)]
    wait_for(link)
    loops, result = [], {}
    settings = RunSettings(bundle=str(tiny_bundle), sources=str(sources), mqtt=mosquitto.url, device_id="dev3",
                           max_seconds=60, spool_dir=str(tmp_path / "spool"))
    runner = threading.Thread(target=lambda: result.update(run_device(settings, on_loop=loops.append)), daemon=True)
    runner.start()
    imu = lambda: [p["sensors"]["imu"] for _, p in sub.messages]  # noqa: E731
    try:
        wait_until(lambda: "ok" in imu(), "imu ok", timeout=20.0)
        mcus[0].terminate()  # the board goes away: its pty closes
        mcus[0].wait(timeout=10)
        n_dead = len(imu())
        wait_until(lambda: imu()[n_dead:].count("missing") >= 3, "imu missing in 3 predictions", timeout=20.0)
        mcus.append(start_mcu(link, seconds=60))  # ... and comes back on the same link
        n_back = len(imu())
        wait_until(lambda: "ok" in imu()[n_back:], "imu ok again", timeout=20.0)
        loops[0].request_stop("test done")
        runner.join(timeout=20)
    finally:
        if loops:
            loops[0].request_stop("test done")
        for p in mcus:
            p.terminate()
            p.wait(timeout=10)
    time.sleep(0.3)
    got = [p for _, p in sub.stop()]
    assert result["reason"] == "test done" and len(got) == result["predictions"]
    for p in got:
        validate("prediction", p)
    states = [p["sensors"]["imu"] for p in got]
    assert runs([s for s in states if s != "stale"])[-3:] == ["ok", "missing", "ok"], states
    assert all(p["sensors"]["camera"] == "missing" for p in got)  # not in the sources file
    during = [p for p in got if p["sensors"]["imu"] == "missing" and "ok" in states[:got.index(p)]]
    assert len(during) >= 3 and all(p["sensors"]["env"] == "missing" for p in during)
    assert all(p["sensors"]["audio"] == "ok" for p in during)  # the other source carried on
    assert result["sources"][str(link)]["restarts"] >= 1
