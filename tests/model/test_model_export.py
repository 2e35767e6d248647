"""The student exports with the dynamo exporter (opset 18, static shapes) and ONNX Runtime agrees with torch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_gmm.config import ModelSpec, SensorSpec, TaskSpec, WindowSpec
from edge_gmm.model import build_model
from edge_gmm.model.onnx_export import LOGMEL_PREFIX, export_onnx

SENSORS = [
    SensorSpec("imu", "imu", 50.0, 3),
    SensorSpec("audio", "audio", 4000.0),
    SensorSpec("camera", "camera", 5.0, height=16, width=16),
]
TASKS = [TaskSpec("state", labels=["a", "b", "c", "d"])]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("student-small", SENSORS, WindowSpec(), TASKS, ModelSpec()).eval()
    # non-trivial normalization buffers, so the test covers that they travel inside the graph
    for tok in model.tokenizers.values():
        tok.mean.uniform_(-0.2, 0.2)
        tok.std.uniform_(0.5, 2.0)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "student.onnx", batch=2)
    return model, path


def _feed(model, seed, mask_rows):
    inputs, mask = model.example_inputs(2, seed=seed)
    mask = torch.tensor(mask_rows, dtype=torch.float32)
    feed = {k: v.numpy() for k, v in inputs.items()}
    feed["mask"] = mask.numpy()
    return inputs, mask, feed


def test_onnx_has_named_static_io(exported):
    model, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["imu", "audio", "camera", "mask"]
    assert [o.name for o in proto.graph.output] == ["logits_state", "embedding"]
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims == {"imu": [2, 3, 50], "audio": [2, 4000], "camera": [2, 3, 16, 16], "mask": [2, 3]}
    assert all(d.dim_value > 0 for o in proto.graph.output for d in o.type.tensor_type.shape.dim)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == 18


def test_logmel_nodes_are_named_for_quantizer_exclusion(exported):
    _, path = exported
    nodes = onnx.load(str(path)).graph.node
    logmel = [n for n in nodes if n.name.startswith(LOGMEL_PREFIX)]
    kinds = {n.op_type for n in logmel}
    assert {"Conv", "Mul", "MatMul", "Log"} <= kinds
    # nothing outside the front end carries the name
    assert all("Log" != n.op_type for n in nodes if not n.name.startswith(LOGMEL_PREFIX))


@pytest.mark.parametrize("mask_rows", [[[1, 1, 1], [1, 0, 1]], [[0, 0, 0], [0, 1, 0]]])
def test_onnxruntime_matches_torch(exported, mask_rows):
    model, path = exported
    inputs, mask, feed = _feed(model, 5, mask_rows)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)
    with torch.no_grad():
        want = model(inputs, mask)
    for name, value in zip(model.output_names, got):
        assert np.isfinite(value).all()
        assert np.abs(value - want[name].numpy()).max() <= 1e-4, name


def test_names_that_are_python_keywords_export(tmp_path):
    # The UEA importer names its task 'class'; torch.export writes submodule names into Python source.
    sensors = [SensorSpec("series", "timeseries", 10.0, channels=2)]
    model = build_model("student-tiny", sensors, WindowSpec(length_s=2.0, hop_s=1.0),
                        [TaskSpec("class", labels=["a", "b"])], ModelSpec()).eval()
    path = export_onnx(model, tmp_path / "kw.onnx")
    sess = ort.InferenceSession(str(path))
    x = np.random.default_rng(0).standard_normal((1, 2, 20)).astype(np.float32)
    (logits,) = sess.run(["logits_class"], {"series": x, "mask": np.ones((1, 1), np.float32)})
    with torch.no_grad():
        ref = model({"series": torch.from_numpy(x)}, torch.ones(1, 1))["logits_class"].numpy()
    assert np.abs(logits - ref).max() < 1e-4
