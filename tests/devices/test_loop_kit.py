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
                postprocess: dict | None = None, seed: int = 0, heavy: int = 0, stream: bool = True) -> Path:
    """A real bundle (manifest + sha256 + ONNX) whose model is a fixed linear fingerprint of its inputs.

    `heavy` > 0 adds that many (512 x 512) @ (512 x 512) products to every inference (~0.27 GFLOP each),
    feeding the logits with a negligible weight so no optimizer can drop them: a genuinely slow model.

    `stream` adds the streaming split (manifest `stream`, runtime/stream.py) of the same fingerprint: tokens of
    D = 1 that tile each window (`stream_layout`), each the mean of its span (encoder.<m>), and a fusion graph
    taking each modality's mean over its present tokens and, as its mask, the fraction of its tokens present (so
    the logits show which tokens were masked): on the whole-window grid, with every token present, the same
    logits as the whole-window graph (up to float rounding); `heavy` slows it alike.
    """
    import onnx

    from edge_gmm.config import to_dict
    from edge_gmm.data.windowing import model_shape
    from edge_gmm.runtime.bundle import write_bundle

    sensors = sensors or scenario_sensors()
    window = window or WindowSpec(length_s=1.0, hop_s=0.5)
    names = [s.name for s in sensors]
    M, K = len(names), len(LABELS)
    rng = np.random.default_rng(seed)
    weights = {"A": rng.normal(size=(M, K)).astype(np.float32), "B": rng.normal(size=(M, K)).astype(np.float32)}
    if heavy:
        weights["W"] = (rng.normal(size=(512, 512)) / 512 ** 0.5).astype(np.float32)
    shapes = {s.name: (batch, *model_shape(s, window)) for s in sensors}
    nodes, inits = _mean_nodes(names), []
    whole = _fingerprint_graph("fingerprint", names, nodes, inits, weights, heavy,
                               [(m, shapes[m]) for m in names] + [("mask", (batch, M))], batch, K)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = out.parent / f"{out.name}.fp32.onnx"
    onnx.save(whole, onnx_path)
    io = _io(whole)
    manifest = {
        "model": {"name": "fingerprint", "version": "0.0.1"},
        "sensors": [to_dict(s) for s in sensors],
        "modalities": names,
        "window": to_dict(window),
        "tasks": [to_dict(TaskSpec("state", "classification", list(LABELS)))],
        **io,
        "target": {"name": "cpu-onnx-fp32", "precision": "fp32", "batch": batch, "opset": 18, "runtime": "onnxruntime"},
    }
    if postprocess is not None:
        manifest["postprocess"] = postprocess
    stream_artifacts = None
    if stream:
        graphs = _stream_graphs(sensors, window, weights, heavy, K)
        stream_artifacts = {}
        for name, model in graphs.items():
            path = out.parent / f"{out.name}.stream.{name}.fp32.onnx"
            onnx.save(model, path)
            stream_artifacts[name] = {"fp32": path}
        manifest["stream"] = {"dim": 1, "batch": 1, "layouts": {s.name: stream_layout(s, window) for s in sensors},
                              "graphs": {name: _io(model) for name, model in graphs.items()}}
    return write_bundle(out, manifest, {"fp32": onnx_path}, stream_artifacts=stream_artifacts)


def stream_layout(sensor, window: WindowSpec) -> dict:
    """The fingerprint's token layout: a camera window is one frame; others are cut into equal spans that tile
    the window (10 where the sample count allows: 0.1 s tokens for a 1 s window)."""
    if sensor.kind == "camera":
        return {"span": 1, "hop": 1, "tokens": 1}
    T = window.samples(sensor)
    n = next(k for k in (10, 8, 5, 4, 2, 1) if T % k == 0)
    return {"span": T // n, "hop": T // n, "tokens": n}


def _mean_nodes(names: list[str]) -> list:
    """(B, ...) -> (B, 1) per modality: the mean of every element, as `<m>_mean`."""
    from onnx import helper

    nodes = []
    for m in names:
        nodes.append(helper.make_node("Flatten", [m], [f"{m}_flat"], axis=1))
        nodes.append(helper.make_node("ReduceMean", [f"{m}_flat", "axis1"], [f"{m}_mean"], keepdims=1))
    return nodes


def _fingerprint_graph(name: str, names: list[str], nodes: list, inits: list, weights: dict, heavy: int,
                       inputs: list, batch: int, K: int):
    """The fingerprint's head over `<m>_mean` (B, 1) and a modality mask named "mask" (B, M) that `nodes` make
    (or that is an input): logits = mask @ A + (means * mask) @ B; embedding = means * mask."""
    from onnx import TensorProto, helper, numpy_helper

    inits = inits + [numpy_helper.from_array(v, k) for k, v in weights.items()] + \
        [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = nodes + [
        helper.make_node("Concat", [f"{m}_mean" for m in names], ["means"], axis=1),  # (B, M)
        helper.make_node("Mul", ["means", "mask"], ["masked"]),
        helper.make_node("MatMul", ["mask", "A"], ["from_mask"]),  # (B, K)
        helper.make_node("MatMul", ["masked", "B"], ["from_data"]),
        helper.make_node("Add", ["from_mask", "from_data"], ["logits_state"]),
        helper.make_node("Identity", ["masked"], ["embedding"]),
    ]
    if heavy:
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
    outputs = [helper.make_tensor_value_info("logits_state", TensorProto.FLOAT, (batch, K)),
               helper.make_tensor_value_info("embedding", TensorProto.FLOAT, (batch, len(names)))]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in inputs]
    return _model(helper.make_graph(nodes, name, ins, outputs, inits))


def _stream_graphs(sensors, window: WindowSpec, weights: dict, heavy: int, K: int) -> dict:
    """encoder.<m>: samples (1, *call_shape) -> tokens (1, 1, 1), the span's mean; fusion over them."""
    from onnx import TensorProto, helper, numpy_helper

    graphs = {}
    for s in sensors:
        lay = stream_layout(s, window)
        call = {"camera": (3, s.height, s.width), "audio": (lay["span"],)}.get(s.kind, (s.channels, lay["span"]))
        nodes = [helper.make_node("Flatten", ["samples"], ["flat"], axis=1),
                 helper.make_node("ReduceMean", ["flat", "axis1"], ["mean"], keepdims=1),  # (1, 1)
                 helper.make_node("Reshape", ["mean", "shape"], ["tokens"])]
        inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                 numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape")]
        graphs[f"encoder.{s.name}"] = _model(helper.make_graph(
            nodes, f"encoder_{s.name}", [helper.make_tensor_value_info("samples", TensorProto.FLOAT, (1, *call))],
            [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, (1, 1, 1))], inits))
    names = [s.name for s in sensors]
    nodes = []
    for m in names:  # the mean over present tokens (0 when none), and present = the fraction of tokens present
        nodes += [helper.make_node("Flatten", [f"tokens_{m}"], [f"{m}_tok"], axis=1),  # (1, N)
                  helper.make_node("Mul", [f"{m}_tok", f"mask_{m}"], [f"{m}_kept"]),
                  helper.make_node("ReduceSum", [f"{m}_kept", "axis1"], [f"{m}_sum"], keepdims=1),
                  helper.make_node("ReduceSum", [f"mask_{m}", "axis1"], [f"{m}_count"], keepdims=1),
                  helper.make_node("Max", [f"{m}_count", "one"], [f"{m}_div"]),
                  helper.make_node("Div", [f"{m}_sum", f"{m}_div"], [f"{m}_mean"]),
                  helper.make_node("ReduceMean", [f"mask_{m}", "axis1"], [f"{m}_present"], keepdims=1)]
    nodes.append(helper.make_node("Concat", [f"{m}_present" for m in names], ["mask"], axis=1))
    inputs = [(f"tokens_{s.name}", (1, stream_layout(s, window)["tokens"], 1)) for s in sensors] + \
        [(f"mask_{s.name}", (1, stream_layout(s, window)["tokens"])) for s in sensors]
    one = [numpy_helper.from_array(np.array([[1.0]], np.float32), "one")]
    graphs["fusion"] = _fingerprint_graph("fingerprint_fusion", names, nodes, one, weights, heavy, inputs, 1, K)
    return graphs


def _model(graph):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _io(model) -> dict:
    """A graph's inputs and outputs as the manifest lists them."""
    def spec(vi):
        return {"name": vi.name, "shape": [d.dim_value for d in vi.type.tensor_type.shape.dim], "dtype": "float32"}

    return {"inputs": [spec(v) for v in model.graph.input], "outputs": [spec(v) for v in model.graph.output]}


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
