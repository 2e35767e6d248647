"""A sensor source dies mid-run: predictions go on with that modality `missing`, and it is used again when it returns.

Real parts: the virtual MCU (`edge-gmm bridge emulate --pty --link`) as a separate process streaming imu and
env over a pty, the serial bridge reading it, a live synthetic microphone, real mosquitto and mosquitto_sub.
Killing the emulator closes the pty (as unplugging a board does); starting it again re-creates the link.
"""

import itertools
import subprocess
import sys
import threading
import time

from edge_gmm.devices.loop import RunSettings, run_device
from edge_gmm.mqtt.payload import validate
from test_loop_kit import REPO, MqttSub, tiny_bundle  # noqa: F401  (fixture)


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
    first = start_mcu(link, seconds=2.5)
    wait_for(link)
    later: list[subprocess.Popen] = []

    def replug():  # the board is away ~1.5 s, then comes back on the same link
        first.wait(timeout=20)
        time.sleep(1.5)
        later.append(start_mcu(link, seconds=20))

    threading.Thread(target=replug, daemon=True).start()
    try:
        summary = run_device(RunSettings(bundle=str(tiny_bundle), sources=str(sources), mqtt=mosquitto.url,
                                         device_id="dev3", max_seconds=7.5, spool_dir=str(tmp_path / "spool")))
    finally:
        for p in [first, *later]:
            p.terminate()
            p.wait(timeout=10)
    time.sleep(0.3)
    got = [p for _, p in sub.stop()]
    assert len(got) == summary["predictions"] >= 10  # hop 0.5 s: predictions never stopped
    for p in got:
        validate("prediction", p)
    imu = [p["sensors"]["imu"] for p in got]
    assert runs([s for s in imu if s != "stale"])[-3:] == ["ok", "missing", "ok"], imu
    assert imu.count("missing") >= 2
    assert all(p["sensors"]["camera"] == "missing" for p in got)  # not in the sources file
    during = [p for p in got if p["sensors"]["imu"] == "missing"]
    assert all(p["sensors"]["audio"] == "ok" for p in during)  # the other sources carried on
    assert summary["sources"][str(link)]["restarts"] >= 1
