"""The device side on Python 3.8, JetPack 5's Python: a real 3.8 venv holding `.[device]` and no torch
(scripts/setup_py38.sh, run by `make setup`) runs the device tests and a replay -> ONNX Runtime -> mosquitto
run. Skips, saying why, only where this machine has no Python 3.8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EDGE_GMM_PY38_VENV", REPO / ".venv38"))
INNER = "EDGE_GMM_PY38_INNER"  # set in the 3.8 run, so nothing in it can start this file again

# Torch-free tests covering every device package in well under a minute. The pty-driven loop tests
# (test_loop_outage, test_loop_serial_faults: ~50 s together) stay in the main suite; `-k "not embedded"`
# leaves out the amqtt broker, which needs Python 3.10 (pyproject: the device extra skips it below that), and the
# two real-time streaming tests (the pty MCU, a paced burst: ~11 s) run in the main suite only.
DEVICE_SUBSET = [
    "tests/test_dependency_rules.py::test_device_side_imports_without_torch",
    "tests/test_config.py",
    "tests/mqtt",
    "tests/firmware_bridge/test_bridge_codec.py",
    "tests/firmware_bridge/test_bridge_decoder.py",
    "tests/firmware_bridge/test_bridge_clock.py",
    "tests/firmware_bridge/test_bridge_forwarder.py",
    "tests/runtime/test_runtime_bundle.py",
    "tests/runtime/test_runtime_runners.py",
    "tests/runtime/test_runtime_trust.py",
    "tests/runtime/test_runtime_tensorrt_fake.py",
    "tests/runtime/test_runtime_tensorrt_versions.py",  # the TensorRT 8.5 -> 11 branches JetPack 5 takes
    "tests/runtime/test_runtime_doctor.py",
    "tests/devices/test_loop_replay_mqtt.py",
    "tests/devices/test_loop_sources.py",
    "tests/devices/test_sources_inputs.py",
    "tests/devices/test_loop_postprocess.py",
    "tests/devices/test_loop_faults.py",
    "tests/devices/test_stream_tokens.py",
    "tests/devices/test_loop_stream.py",  # the streaming loop: parity, per-token masks, --rate, a pty, CLI errors
    "tests/devices/test_profiles_devices.py",
]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get(INNER) == "1", reason="inside the Python 3.8 run")]


def _env() -> dict[str, str]:
    return {**os.environ, INNER: "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def py38() -> Path:
    """The 3.8 venv's python, created or refreshed by the setup script (a no-op when it is current)."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "setup_py38.sh")], capture_output=True, text=True,
                         timeout=900, cwd=REPO, env={**os.environ, "EDGE_GMM_PY38_VENV": str(VENV)})
    assert out.returncode == 0, out.stdout + out.stderr
    py = VENV / "bin" / "python"
    if not py.exists():
        reason = out.stdout.strip().splitlines()[-1]
        print(reason)
        pytest.skip(reason)
    return py


def test_device_tests_pass_on_python38_without_torch(py38):
    probe = subprocess.run([str(py38), "-c", "import sys, importlib.util; "
                            "print(sys.version_info[:2], importlib.util.find_spec('torch') is None)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == ["(3,", "8)", "True"], probe.stdout + probe.stderr  # 3.8, and torch truly absent
    out = subprocess.run([str(py38), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not embedded and not virtual_mcu and not burst",
                          *DEVICE_SUBSET], capture_output=True, text=True, timeout=400, cwd=REPO, env=_env())
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]


def test_replay_through_onnxruntime_to_mosquitto_on_python38(py38, mosquitto, tmp_path):
    # The workstation (this Python) writes the dataset and bundle; the 3.8 device side runs them, as on a Jetson.
    sys.path.insert(0, str(REPO / "tests" / "devices"))
    from test_loop_kit import MqttSub, make_bundle, make_dataset

    from edge_gmm.mqtt.payload import validate

    dataset, bundle = make_dataset(tmp_path / "mh"), make_bundle(tmp_path / "bundle")
    n = 5
    sub = MqttSub(mosquitto.port, "edge-gmm/v1/jp5/prediction")
    time.sleep(0.3)  # mosquitto_sub subscribed
    run = subprocess.run([str(py38), "-m", "edge_gmm.cli.main", "run", "--bundle", str(bundle), "--sources",
                          f"replay://{dataset}", "--mqtt", mosquitto.url, "--device-id", "jp5", "--speed", "max",
                          "--runner", "onnxrt", "--max-windows", str(n), "--spool-dir", str(tmp_path / "spool"),
                          "--quiet"], capture_output=True, text=True, timeout=120, cwd=REPO, env=_env())
    assert run.returncode == 0, run.stdout + run.stderr
    deadline = time.monotonic() + 10
    while len(sub.messages) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    got = [p for _, p in sub.stop()]
    assert [p["seq"] for p in got] == list(range(n))  # every prediction arrived, in order
    for p in got:
        validate("prediction", p)
    assert got[0]["model"]["backend"] == "onnxrt"

    # `doctor` on the same bundle reports this Python and ONNX Runtime (golden-window checks: test_runtime_doctor)
    doc = subprocess.run([str(py38), "-m", "edge_gmm.cli.main", "doctor", "--bundle", str(bundle), "--json"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=_env())
    assert doc.returncode == 0, doc.stdout + doc.stderr
    report = json.loads(doc.stdout)
    assert report["platform"]["python"].startswith("3.8.") and report["runner"]["runner"] == "onnxrt"


def test_workstation_commands_refuse_python38_with_exit_2(py38):
    out = subprocess.run([str(py38), "-m", "edge_gmm.cli.main", "train", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env=_env())
    assert out.returncode == 2, out.stdout + out.stderr
    assert "needs Python 3.10+ (this is 3.8)" in out.stderr and "Traceback" not in out.stderr
