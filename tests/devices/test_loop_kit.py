"""Shared pieces of the loop tests: a small replayable dataset and a tiny real ONNX bundle made with onnx.helper.

The model is not trained; its logits are a fingerprint of the inputs and the mask
(`logits = mask @ A + mean(inputs) @ B`), so a test can check that the loop fed the model exactly the
windows offline windowing cuts, and that masked modalities reached it as masked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_gmm.config import TaskSpec, WindowSpec

SCENARIO_OPTS = {"camera_size": 8, "audio_rate": 1000}  # small frames and a low audio rate keep tests fast
LABELS = ["normal", "bearing_wear", "electrical_fault", "overheating", "imbalance"]
REPO = Path(__file__).resolve().parents[2]


def scenario_sensors():
    from edge_gmm.data import synth

    return synth.get_scenario("machine-health", **SCENARIO_OPTS).sensors()


def make_dataset(out: Path, sessions: int = 2, seconds: float = 4.0) -> Path:
    """A machine-health dataset of `sessions` short sessions, all in the test split."""
    from edge_gmm.data import synth
    from edge_gmm.data.format import DatasetWriter

    sc = synth.get_scenario("machine-health", **SCENARIO_OPTS)
    with DatasetWriter(out, name="mh-small", sensors=sc.sensors(), tasks=sc.tasks(), window=sc.window()) as w:
        for i in range(sessions):
            s = sc.session(LABELS[i % len(LABELS)], seed=10 + i, duration_s=seconds, sid=f"s{i}")
            w.add(s, "test")
    return out


def make_bundle(out: Path, sensors=None, window: WindowSpec | None = None, *, batch: int = 1,
                postprocess: dict | None = None, seed: int = 0, heavy: int = 0) -> Path:
    """A real bundle (manifest + sha256 + ONNX) whose model is a fixed linear fingerprint of its inputs.

    `heavy` > 0 adds that many (512 x 512) @ (512 x 512) products to every inference (~0.27 GFLOP each),
    feeding the logits with a negligible weight so no optimizer can drop them: a genuinely slow model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_gmm.config import to_dict
    from edge_gmm.data.windowing import model_shape
    from edge_gmm.runtime.bundle import write_bundle

    sensors = sensors or scenario_sensors()
    window = window or WindowSpec(length_s=1.0, hop_s=0.5)
    names = [s.name for s in sensors]
    M, K = len(names), len(LABELS)
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(M, K)).astype(np.float32)
    B = rng.normal(size=(M, K)).astype(np.float32)
    shapes = {s.name: (batch, *model_shape(s, window)) for s in sensors}
    nodes, inits = [], [numpy_helper.from_array(A, "A"), numpy_helper.from_array(B, "B"),
                        numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    for m in names:  # (B, ...) -> (B, D) -> (B, 1)
        nodes.append(helper.make_node("Flatten", [m], [f"{m}_flat"], axis=1))
        nodes.append(helper.make_node("ReduceMean", [f"{m}_flat", "axis1"], [f"{m}_mean"], keepdims=1))
    nodes += [
        helper.make_node("Concat", [f"{m}_mean" for m in names], ["means"], axis=1),  # (B, M)
        helper.make_node("Mul", ["means", "mask"], ["masked"]),
        helper.make_node("MatMul", ["mask", "A"], ["from_mask"]),  # (B, K)
        helper.make_node("MatMul", ["masked", "B"], ["from_data"]),
        helper.make_node("Add", ["from_mask", "from_data"], ["logits_state"]),
        helper.make_node("Identity", ["masked"], ["embedding"]),
    ]
    if heavy:
        inits.append(numpy_helper.from_array((rng.normal(size=(512, 512)) / 512 ** 0.5).astype(np.float32), "W"))
        inits.append(numpy_helper.from_array(np.array([1e-9], np.float32), "tiny"))
        nodes[-2] = helper.make_node("Add", ["from_mask", "from_data"], ["logits_base"])
        nodes.append(helper.make_node("ReduceMean", ["means"], ["level"], keepdims=0))  # scalar from the inputs
        nodes.append(helper.make_node("Mul", ["W", "level"], ["h0"]))
        for i in range(heavy):  # (512, 512) @ (512, 512), tanh
            nodes.append(helper.make_node("MatMul", [f"h{i}", "W"], [f"p{i}"]))
            nodes.append(helper.make_node("Tanh", [f"p{i}"], [f"h{i + 1}"]))
        nodes.append(helper.make_node("ReduceMean", [f"h{heavy}"], ["busy"], keepdims=0))
        nodes.append(helper.make_node("Mul", ["busy", "tiny"], ["busy_tiny"]))
        nodes.append(helper.make_node("Add", ["logits_base", "busy_tiny"], ["logits_state"]))
    inputs = [helper.make_tensor_value_info(m, TensorProto.FLOAT, shapes[m]) for m in names]
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, (batch, M)))
    outputs = [helper.make_tensor_value_info("logits_state", TensorProto.FLOAT, (batch, K)),
               helper.make_tensor_value_info("embedding", TensorProto.FLOAT, (batch, M))]
    graph = helper.make_graph(nodes, "fingerprint", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = out.parent / f"{out.name}.fp32.onnx"
    onnx.save(model, onnx_path)
    manifest = {
        "model": {"name": "fingerprint", "version": "0.0.1"},
        "sensors": [to_dict(s) for s in sensors],
        "modalities": names,
        "window": to_dict(window),
        "tasks": [to_dict(TaskSpec("state", "classification", list(LABELS)))],
        "inputs": [{"name": n, "shape": list(shapes[n]), "dtype": "float32"} for n in names]
                  + [{"name": "mask", "shape": [batch, M], "dtype": "float32"}],
        "outputs": [{"name": "logits_state", "shape": [batch, K], "dtype": "float32"},
                    {"name": "embedding", "shape": [batch, M], "dtype": "float32"}],
        "target": {"name": "cpu-onnx-fp32", "precision": "fp32", "batch": batch, "opset": 18, "runtime": "onnxruntime"},
    }
    if postprocess is not None:
        manifest["postprocess"] = postprocess
    return write_bundle(out, manifest, {"fp32": onnx_path})


def offline_logits(bundle: Path, dataset: Path) -> dict[tuple[str, float], np.ndarray]:
    """Logits of every offline window of the dataset's test split, keyed by (session, window end in session time)."""
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.windowing import make_windows
    from edge_gmm.runtime.bundle import Bundle
    from edge_gmm.runtime.runners import create_runner

    b = Bundle.open(bundle)
    w = make_windows(Dataset.open(dataset), "test", b.window, drop_empty=False)
    out = {}
    with create_runner("onnxrt", b) as r:
        for i in range(len(w)):
            feed = {m: w.inputs[m][i:i + 1] for m in w.modalities}
            feed["mask"] = w.mask[i:i + 1]
            out[(w.session[i], round(float(w.t_end[i]), 6))] = r.infer(feed)["logits_state"][0]
    return out


class MqttSub:
    """`mosquitto_sub` (a third-party client) collecting JSON messages on a topic in the background."""

    def __init__(self, url_port: int, topic: str, count: int | None = None):
        cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(url_port), "-t", topic, "-q", "1", "-v"]
        if count:
            cmd += ["-C", str(count)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.messages: list[tuple[str, dict]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            topic, _, body = line.partition(" ")
            self.messages.append((topic, json.loads(body)))

    def stop(self, timeout: float = 5.0) -> list[tuple[str, dict]]:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.messages


def wait_until(cond, what: str, timeout: float = 15.0) -> None:
    """Poll `cond` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`edge-gmm ARGS` as a separate process (signals and exit codes as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "edge_gmm.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("loopdata") / "mh")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("loopbundle") / "bundle")
