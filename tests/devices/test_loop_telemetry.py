"""On a Jetson the metrics topic carries tegrastats readings. tegrastats cannot exist here, so a stand-in
script on PATH replays lines captured on an Orin Nano; everything after it (parser, reader thread, loop,
publisher, real mosquitto) is the real path."""

import os
import stat
import sys

from edge_gmm.devices.job import RunSettings, run_device
from edge_gmm.mqtt.payload import validate
from test_loop_kit import REPO, MqttSub, small_dataset, tiny_bundle  # noqa: F401

CAPTURED = REPO / "tests" / "devices" / "fixtures" / "tegrastats" / "jetson-orin-nano-jp62.txt"


def test_metrics_carry_jetson_telemetry_when_tegrastats_exists(mosquitto, small_dataset, tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "tegrastats"
    fake.write_text(f"#!{sys.executable}\nimport sys, time\n"
                    f"for line in open({str(CAPTURED)!r}):\n"
                    "    print(line.rstrip(), flush=True); time.sleep(0.05)\n"
                    "time.sleep(60)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    metrics = MqttSub(mosquitto.port, "edge-gmm/v1/jet1/metrics")
    summary = run_device(RunSettings(bundle=str(tiny_bundle), sources=f"replay://{small_dataset}", mqtt=mosquitto.url,
                                     device_id="jet1", max_seconds=1.5, speed=4.0, spool_dir=str(tmp_path / "spool"),
                                     metrics_every_s=0.3))
    assert summary["predictions"] > 0
    periodic = [p for _, p in metrics.stop()]
    with_jetson = [p for p in periodic if "jetson" in p]
    assert with_jetson, f"no metrics message carried tegrastats readings: {periodic[-1] if periodic else None}"
    last = with_jetson[-1]
    validate("metrics", last)
    assert last["jetson"]["ram_used_mb"] > 0 and "gpu_load_pct" in last["jetson"]
    assert any(k.startswith("power_") for k in last["jetson"]) and any(k.startswith("temp_") for k in last["jetson"])


def test_metrics_have_no_jetson_section_elsewhere(mosquitto, small_dataset, tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no tegrastats
    metrics = MqttSub(mosquitto.port, "edge-gmm/v1/pc1/metrics")
    run_device(RunSettings(bundle=str(tiny_bundle), sources=f"replay://{small_dataset}", mqtt=mosquitto.url, device_id="pc1",
                           max_seconds=1.0, speed=4.0, spool_dir=str(tmp_path / "spool"), metrics_every_s=0.3))
    periodic = [p for _, p in metrics.stop()]
    assert periodic and all("jetson" not in p for p in periodic)
