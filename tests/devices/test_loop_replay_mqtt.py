"""replay → loop → real mosquitto → mosquitto_sub: every prediction arrives, valid, and equal to offline inference."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edge_gmm.devices.job import RunSettings, run_device
from edge_gmm.devices.postprocess import softmax
from edge_gmm.mqtt.payload import validate
from test_loop_kit import REPO, MqttSub, make_bundle, offline_logits, run_cli, small_dataset, tiny_bundle  # noqa: F401


def test_replay_predictions_reach_a_third_party_subscriber_and_match_offline(mosquitto, small_dataset, tiny_bundle, tmp_path):  # noqa: F811
    sub = MqttSub(mosquitto.port, "edge-gmm/v1/dev1/prediction")
    time.sleep(0.3)  # mosquitto_sub subscribed
    loops = []
    # whole windows: offline inference is the whole-window graph on offline windows (streaming is compared with
    # it in test_loop_stream.py, where a jittered sample moving across a token edge masks that token only)
    summary = run_device(RunSettings(bundle=str(tiny_bundle), sources=f"replay://{small_dataset}", mqtt=mosquitto.url,
                                     device_id="dev1", speed=float("inf"), spool_dir=str(tmp_path / "spool"),
                                     whole_window=True),
                         on_loop=loops.append)
    n = summary["predictions"]
    assert summary["reason"] == "sources ended" and summary["dropped_windows"] == 0
    assert summary["publisher"]["acked"] == n and summary["publisher"]["spooled"] == 0
    deadline = time.monotonic() + 10
    while len(sub.messages) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    got = [p for _, p in sub.stop()]
    assert [p["seq"] for p in got] == list(range(n))  # every prediction, in order, no gap or duplicate
    for p in got:
        validate("prediction", p)
    assert got[0]["model"] == {"name": "fingerprint", "version": "0.0.1", "precision": "fp32", "backend": "onnxrt"}

    # Map each published window back to (session, end on the session's clock) and compare with offline.
    loop = loops[0]
    (source,) = [d.source for d in loop.drivers]
    starts = sorted((off, sid) for sid, off in source.offsets)
    expected = offline_logits(tiny_bundle, small_dataset)
    matched = 0
    for p in got:
        host_end = p["window"]["end"] - loop.clock.to_wall(0.0)
        offset, sid = max((o, s) for o, s in starts if o <= host_end + 1e-6)
        key = (sid, round(host_end - offset, 2))
        if key not in {(s, round(e, 2)) for s, e in expected}:
            continue  # a window across two sessions: offline has none
        ref = next(v for (s, e), v in expected.items() if (s, round(e, 2)) == key)
        assert p["tasks"]["state"]["scores"] == pytest.approx(dict(zip(got[0]["tasks"]["state"]["scores"], softmax(ref))), abs=1e-5)
        matched += 1
    assert matched == len(expected)  # every offline window was produced, with identical inputs and mask


def test_a_tampered_bundle_exits_2_before_contacting_the_broker(small_dataset, tiny_bundle, tmp_path):  # noqa: F811
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    with open(bad / "model.fp32.onnx", "ab") as f:
        f.write(b"\0")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    r = run_cli("run", "--bundle", bad, "--sources", f"replay://{small_dataset}", "--mqtt", f"mqtt://127.0.0.1:{port}",
                "--spool-dir", tmp_path / "spool")
    assert r.returncode == 2
    assert "model.fp32.onnx" in r.stderr and "sha256" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", "--bundle", tiny_bundle, "--sources", f"replay://{small_dataset}", "--mqtt",
                f"mqtt://127.0.0.1:{port}", "--precision", "int8", "--spool-dir", tmp_path / "spool")
    assert r.returncode == 2 and "no int8 artifact" in r.stderr  # a precision the bundle lacks: refused up front
    with pytest.raises(socket.timeout):
        listener.accept()  # nobody connected
    listener.close()


def test_sigterm_stops_cleanly_with_a_final_status(mosquitto, small_dataset, tiny_bundle, tmp_path):  # noqa: F811
    sub = MqttSub(mosquitto.port, "edge-gmm/v1/dev2/prediction")
    metrics = MqttSub(mosquitto.port, "edge-gmm/v1/dev2/metrics")
    time.sleep(0.3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_gmm.cli.main", "run", "--bundle", str(tiny_bundle), "--sources",
         f"replay://{small_dataset}?loop=1", "--mqtt", mosquitto.url, "--device-id", "dev2", "--speed", "4",
         "--spool-dir", str(tmp_path / "spool"), "--metrics-every", "0.3", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 20
    while len(sub.messages) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert len(sub.messages) >= 3, proc.stderr.read() if proc.poll() is not None else "no predictions"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["reason"] == "SIGTERM" and summary["predictions"] >= 3
    assert summary["publisher"]["acked"] == summary["predictions"]
    status = subprocess.run(["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge-gmm/v1/dev2/status", "-C", "1", "-W", "5"],
                            capture_output=True, text=True, timeout=10)
    final = json.loads(status.stdout)
    validate("status", final)
    assert final["state"] == "offline" and final["stop_reason"] == "SIGTERM"
    assert final["model"]["name"] == "fingerprint"
    time.sleep(0.3)
    assert len(sub.stop()) == summary["predictions"]
    periodic = [p for _, p in metrics.stop()]
    assert len(periodic) >= 2  # periodic, plus the final one at shutdown
    for p in periodic:
        validate("metrics", p)
    last = periodic[-1]
    assert last["predictions"] == summary["predictions"] and set(last["sensors"]) == {"imu", "audio", "camera", "env"}
    assert {"infer", "total", "overhead"} <= set(last["latency_ms"]) and "dropped_windows" in last


def test_auto_runner_falls_back_to_onnxruntime_when_tensorrt_cannot_start(small_dataset, tiny_bundle, tmp_path):  # noqa: F811
    # A machine where `import tensorrt` works but cuda-python is absent (a half-installed JetPack).
    (tmp_path / "fake" / "tensorrt").mkdir(parents=True)
    (tmp_path / "fake" / "tensorrt" / "__init__.py").write_text("__version__ = '10.0.0'\n")
    import os

    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'fake'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "edge_gmm.cli.main", "run", "--bundle", str(tiny_bundle), "--sources",
                        f"replay://{small_dataset}", "--mqtt", "none", "--speed", "max", "--json"],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["backend"] == "onnxrt"
    assert "runner tensorrt unavailable" in r.stderr and "cuda-python" in r.stderr
    named = subprocess.run([sys.executable, "-m", "edge_gmm.cli.main", "run", "--bundle", str(tiny_bundle), "--sources",
                            f"replay://{small_dataset}", "--mqtt", "none", "--runner", "tensorrt"],
                           capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert named.returncode == 2 and "cuda-python" in named.stderr  # asked for by name: no silent fallback


def test_predictions_made_while_the_broker_is_down_survive_a_killed_loop(mosquitto, small_dataset, tiny_bundle, tmp_path):  # noqa: F811
    mosquitto.stop()  # the broker is away from the start
    base = [sys.executable, "-m", "edge_gmm.cli.main", "run", "--bundle", str(tiny_bundle), "--sources",
            f"replay://{small_dataset}?loop=1", "--mqtt", mosquitto.url, "--device-id", "dev4", "--speed", "4",
            "--spool-dir", str(tmp_path / "spool")]
    first = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    for line in first.stderr:  # wait for data to flow, however slow the start
        if ": up" in line:
            break
    time.sleep(1.5)  # a window every 0.125 s: about a dozen predictions spooled
    first.kill()  # SIGKILL: no clean shutdown, nothing flushed by hand
    first.wait(timeout=10)
    mosquitto.start()
    sub = MqttSub(mosquitto.port, "edge-gmm/v1/dev4/prediction")
    time.sleep(0.3)
    second = run_cli(*base[3:], "--max-windows", "3", "--json")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    deadline = time.monotonic() + 10
    while len(sub.messages) < summary["publisher"]["acked"] and time.monotonic() < deadline:
        time.sleep(0.05)
    seqs = [p["seq"] for _, p in sub.stop()]
    assert len(seqs) > 3  # what the killed loop spooled, then the new run's own three
    assert seqs == list(range(len(seqs)))  # from 0, in order, no gap: nothing the killed loop made was lost
