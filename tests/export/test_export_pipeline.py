"""The export pipeline on a real (briefly trained) student and real windows from a synthetic dataset:
parity, INT8 gates (a broken calibration must fail), log-mel kept FP32, signed bundle, runners agree.

One module-scoped run + one CLI export are shared by the tests (each export costs seconds on 2 cores).
"""

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_MODALITIES  # noqa: E402
from edge_gmm.config import FusionConfig, ModelSpec  # noqa: E402
from edge_gmm.errors import MissingDependencyError  # noqa: E402
from edge_gmm.export import evaluate as ev  # noqa: E402
from edge_gmm.export.gates import ExportGateError, check_parity  # noqa: E402
from edge_gmm.export.pipeline import export_model, torch_outputs  # noqa: E402
from edge_gmm.export.targets import load_target  # noqa: E402
from edge_gmm.runtime.bundle import Bundle, generate_keypair  # noqa: E402
from edge_gmm.runtime.runners import create_runner  # noqa: E402

MODALITIES = TINY_MODALITIES  # the session-trained model's (tiny_trained)


@pytest.fixture(scope="module")
def run_dir(tiny_trained, tmp_path_factory):
    """A run directory (run.json + student.safetensors) of the session's briefly trained student-tiny."""
    from edge_gmm.train.checkpoint import save_weights, write_run_json

    ds, _, fresh = tiny_trained
    sensors = [s for s in ds.sensors if s.name in MODALITIES]
    cfg = FusionConfig(dataset=str(ds.path), modalities=MODALITIES, window=ds.window,
                       model=ModelSpec(preset="student-tiny", student="student-tiny"))
    run = tmp_path_factory.mktemp("export") / "run"
    write_run_json(run, cfg, sensors, ds.window, list(ds.tasks), str(ds.path))
    save_weights(fresh(), run / "student.safetensors")
    return run


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(run_dir, keys):
    from edge_gmm.cli.main import main

    out = run_dir.parent / "bundle"
    assert main(["export", str(run_dir), "--target", "cpu-onnx-int8", "--out", str(out), "--sign-key", str(keys[0]),
                 # the training split: ~100 windows the student fits well, so one borderline window cannot flip the 1-point gate
                 "--eval-split", "train"]) == 0
    return Bundle.open(out)


@pytest.fixture(scope="module")
def loaded(run_dir):
    from edge_gmm.export.pipeline import run_windows
    from edge_gmm.train.checkpoint import load_run

    run = load_run(run_dir)
    calib, evalw = run_windows(run, "train")
    return run, calib, evalw


def test_cli_export_writes_a_signed_bundle_with_measured_metrics(bundle, keys, loaded):
    _, _, evalw = loaded
    assert bundle.verify(keys[1])  # every artifact hashed, manifest signed
    m = bundle.manifest
    assert set(m["artifacts"]) == {"fp32", "int8"}
    shapes = {t.name: t.shape for t in bundle.inputs}
    assert shapes == {"imu": (1, *evalw.inputs["imu"].shape[1:]), "audio": (1, *evalw.inputs["audio"].shape[1:]), "mask": (1, 2)}
    assert [t.name for t in bundle.outputs] == ["logits_state", "embedding"]
    assert m["modalities"] == MODALITIES and m["tasks"][0]["labels"][0] == "normal"
    assert max(m["parity"]["max_abs_diff"].values()) < 1e-4
    assert m["metrics"]["fp32"]["windows"] == len(evalw.mask)
    assert m["metrics"]["int8"]["top1_agreement"]["state"] >= 0.99
    assert m["metrics"]["fp32"]["accuracy"]["state"] - m["metrics"]["int8"]["accuracy"]["state"] <= 1.0
    assert m["model"]["flops"] > 0 and m["lint"]["ok"]


def test_logmel_frontend_stays_fp32_in_the_int8_graph(bundle):
    q = onnx.load(str(bundle.artifact_path("int8")))
    produced_by = {o: n for n in q.graph.node for o in n.output}
    logmel = [n for n in q.graph.node if "logmel" in n.name]
    assert logmel and bundle.manifest["artifacts"]["int8"]["fp32_nodes"]
    for node in logmel:
        assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for i in node.input), node.name
    quantized = [n for n in q.graph.node if n.op_type in ("MatMul", "Conv", "Gemm") and any(
        produced_by.get(i) is not None and produced_by[i].op_type == "DequantizeLinear" for i in n.input)]
    assert len(quantized) >= 4
    zps = [i for i in q.graph.initializer if i.name.endswith("zero_point")]
    assert zps and all(z.data_type == onnx.TensorProto.INT8 for z in zps)  # signed symmetric for TensorRT


def test_parity_gate_catches_a_graph_that_computes_something_else(bundle, loaded, tmp_path):
    run, _, evalw = loaded
    m = onnx.load(str(bundle.artifact_path("fp32")))
    head = next(i for i in m.graph.initializer if "heads" in i.name and "bias" in i.name)
    arr = onnx.numpy_helper.to_array(head).copy()
    arr[0] += 0.5
    head.CopyFrom(onnx.numpy_helper.from_array(arr, head.name))
    onnx.save(m, str(tmp_path / "changed.onnx"))
    ref = torch_outputs(run.student, evalw, MODALITIES, 16)
    got = ev.run_onnx(tmp_path / "changed.onnx", evalw, MODALITIES, 1, 16)
    with pytest.raises(ExportGateError, match="logits_state"):
        check_parity(ev.max_abs_diff(got, ref), {k: float(np.abs(v).max()) for k, v in ref.items()}, 1e-4)
    check_parity(ev.max_abs_diff(ev.run_onnx(bundle.artifact_path("fp32"), evalw, MODALITIES, 1, 16), ref), {}, 1e-4)


def test_broken_calibration_fails_the_int8_gate_and_names_layers(loaded, tmp_path, monkeypatch):
    """A calibration that got every activation range 100x too wide (e.g. data recorded in the wrong units on
    every sensor), made by rescaling the real quantizer's activation scales, must be stopped by the gate.

    (Feeding odd calibration windows is not a reliable way to break it: the student's LayerNorms re-normalize
    every block, so only the first layer's ranges follow the input, and that alone did not move the gate.)"""
    from edge_gmm.export.quantize import QUANTIZERS, quantize_ort

    def wrong_ranges(src, dst, calibration, exclude):
        info = quantize_ort(src, dst, calibration, exclude)
        m = onnx.load(str(dst))
        inits = {i.name: i for i in m.graph.initializer}
        for scale in {n.input[1] for n in m.graph.node if n.op_type == "QuantizeLinear"}:  # activation scales
            inits[scale].CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(inits[scale]) * 100, scale))
        onnx.save(m, str(dst))
        return info

    monkeypatch.setitem(QUANTIZERS._table, "wrong-ranges", wrong_ranges)
    run, calib, evalw = loaded
    with pytest.raises(ExportGateError) as e:
        export_model(run.student, target=load_target("cpu-onnx-int8"), out=tmp_path / "b", calib_windows=calib,
                     eval_windows=evalw, quantizer="wrong-ranges")
    msg = str(e.value)
    assert "int8 gate failed" in msg and "top-1 agreement" in msg and "SQNR" in msg
    assert not (tmp_path / "b").exists()  # nothing shipped


def test_fp16_conversion_of_the_real_student_agrees_with_fp32(bundle, loaded, tmp_path):
    from edge_gmm.export.fp16 import convert_to_fp16

    _, _, evalw = loaded
    onnx.save(convert_to_fp16(onnx.load(str(bundle.artifact_path("fp32")))), str(tmp_path / "h.onnx"))
    out16 = ev.run_onnx(tmp_path / "h.onnx", evalw, MODALITIES, 1, 48)
    out32 = ev.run_onnx(bundle.artifact_path("fp32"), evalw, MODALITIES, 1, 48)
    assert ev.agreement(out16, out32, run_tasks(bundle))["state"] >= 0.97
    assert np.abs(out16["logits_state"] - out32["logits_state"]).max() < 0.05


def run_tasks(bundle):
    return bundle.tasks


def test_torch_onnxrt_fp32_and_int8_runners_agree(bundle, run_dir, loaded):
    _, _, evalw = loaded
    feed = next(ev.iter_feeds(evalw, MODALITIES, 1))
    with create_runner("torch", bundle, run_dir=run_dir) as t, create_runner("onnxrt", bundle, precision="fp32") as o32, \
            create_runner("onnxrt", bundle, precision="int8") as o8:
        a, b, c = t.infer(feed), o32.infer(feed), o8.infer(feed)
    np.testing.assert_allclose(a["logits_state"], b["logits_state"], atol=1e-4)
    assert a["logits_state"].argmax() == c["logits_state"].argmax()


def test_cli_bench_table_has_torch_and_onnxrt_rows(bundle, run_dir, cli):
    import json

    code, out, _ = cli("bench", bundle.root, "--runners", "onnxrt,torch", "--threads", "1", "--iters", "20", "--json", "--run", run_dir)
    assert code == 0
    rows = {(r["runner"], r["precision"]): r for r in json.loads(out)["rows"]}
    assert set(rows) == {("onnxrt", "fp32"), ("onnxrt", "int8"), ("torch", "fp32")}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and r["peak_pct"] > 0 for r in rows.values())


def test_optional_quantizers_name_their_extra_when_absent(run_dir, tmp_path, cli):
    from edge_gmm.export.quantize import QUANTIZERS

    code, _, err = cli("export", run_dir, "--target", "cpu-onnx-int8", "--out", tmp_path / "b", "--quantizer", "modelopt")
    assert code == 2 and "edge-gmm[modelopt]" in err  # refused before any export work

    for name, extra in (("modelopt", "edge-gmm[modelopt]"), ("optimum", "edge-gmm[optimum]")):
        with pytest.raises(MissingDependencyError) as e:
            QUANTIZERS.get(name)(Path("in.onnx"), tmp_path / "out.onnx", lambda: iter([]), [])
        assert extra in str(e.value)
