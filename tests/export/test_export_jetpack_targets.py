"""Every shipped target on a real (untrained) student: exported at the target's opset with the target's
rewrites, the graph lints clean for that target's TensorRT, and ONNX Runtime on it matches torch.

One export per distinct (opset, rewrites) — a few seconds each on 2 cores — shared by all targets."""

import copy

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from edge_gmm.export import evaluate as ev  # noqa: E402
from edge_gmm.export.fp16 import convert_to_fp16  # noqa: E402
from edge_gmm.export.lint import lint_onnx  # noqa: E402
from edge_gmm.export.pipeline import torch_outputs  # noqa: E402
from edge_gmm.export.targets import DECOMPOSED_FP32, list_targets, load_target  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODALITIES = ["imu", "audio"]
TARGETS = [t.name for t in list_targets()]


@pytest.fixture(scope="module", params=["student-tiny", "student-stream"])  # the backbone; the default student
def student(request, tmp_path_factory, one_torch_thread):
    from edge_gmm.config import ModelSpec
    from edge_gmm.data.synth import synthesize
    from edge_gmm.data.windowing import make_windows
    from edge_gmm.model import build_model

    ds = synthesize("machine-health", tmp_path_factory.mktemp("ds") / "ds", sessions_per_class=1, session_seconds=3.0)
    sensors = [s for s in ds.sensors if s.name in MODALITIES]
    torch.manual_seed(0)
    preset = request.param
    model = build_model(preset, sensors, ds.window, list(ds.tasks), ModelSpec(preset=preset, student=preset)).eval()
    windows = make_windows(ds, "train", ds.window, MODALITIES)
    return model, windows, torch_outputs(model, windows, MODALITIES, 8)


@pytest.fixture(scope="module")
def exports(student, tmp_path_factory):
    """(opset, needs LayerNorm decomposed) -> the exported graph, built once."""
    from edge_gmm.model.onnx_export import export_onnx

    model, _, _ = student
    out, root = {}, tmp_path_factory.mktemp("onnx")

    def get(target):
        from edge_gmm.export.targets import op_supported

        key = (target.opset, op_supported("LayerNormalization", target))
        if key not in out:
            path = export_onnx(model, root / f"m{key[0]}_{int(key[1])}.onnx", opset=target.opset, target=target)
            out[key] = onnx.load(str(path))
        return out[key]

    return get


def _parity(proto, windows, ref, atol, tmp_path):
    path = tmp_path / "g.onnx"
    onnx.save(proto, str(path))
    got = ev.run_onnx(path, windows, MODALITIES, 1, 8)
    diffs = ev.max_abs_diff(got, ref)
    assert max(diffs.values()) < atol, diffs


@pytest.mark.parametrize("name", TARGETS)
def test_every_shipped_target_lints_clean_and_matches_torch(name, student, exports, tmp_path):
    target = load_target(name)
    _, windows, ref = student
    proto = exports(target)
    report = lint_onnx(proto, target)
    assert report.ok, report.issues
    assert report.opset == target.opset
    ops = {n.op_type for n in proto.graph.node}
    assert "Gelu" not in ops or target.opset >= 20  # torch writes GELU as Erf below opset 20
    if target.tensorrt_version.startswith("8.5"):
        assert "LayerNormalization" not in ops and any(DECOMPOSED_FP32 in n.name for n in proto.graph.node)
    _parity(proto, windows, ref, 1e-4, tmp_path)
    if target.precision == "fp16":  # what ORT runs for the fp16 artifact; the decomposed LayerNorm stays FP32
        half = convert_to_fp16(copy.deepcopy(proto), target.fp32_layers)
        kept = [n for n in half.graph.node if DECOMPOSED_FP32 in n.name and n.op_type == "Pow"]
        types = {vi.name: vi.type.tensor_type.elem_type for vi in half.graph.value_info}
        assert all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in kept)
        _parity(half, windows, ref, 5e-2, tmp_path)


def test_rewritten_export_records_its_rewrites(exports):
    proto = exports(load_target("jetson-xavier-nx-fp16"))
    assert {p.key: p.value for p in proto.metadata_props}["edge_gmm.rewrites"] == "LayerNormalization"
    assert "edge_gmm.rewrites" not in {p.key for p in exports(load_target("jetson-orin-nx-fp16")).metadata_props}


def test_unsupported_target_is_refused_with_the_reason(cli):
    code, _, err = cli("export", "no-such-run", "--target", "jetson-nano-fp16", "--out", "/tmp/never-written")
    assert code == 2 and "TensorRT 8.2 is not supported" in err and "Traceback" not in err
    assert "jetson-nano-fp16" not in TARGETS
