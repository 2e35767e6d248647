"""The bundle's streaming split (export/stream_export.py) on a real, briefly trained student and real windows:
every graph shipped and hashed, the encoder calls + fusion composed in ONNX Runtime equal the whole-window
graph (a modality masked too), `bundle inspect` shows it, a malformed stream section is refused.

Two exports (cpu-onnx-fp32, cpu-onnx-int8) of one model are shared by the module (each costs ~20 s on one core).
"""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_MODALITIES  # noqa: E402
from edge_gmm.errors import BundleError  # noqa: E402
from edge_gmm.export import evaluate as ev  # noqa: E402
from edge_gmm.export.pipeline import export_model  # noqa: E402
from edge_gmm.export.targets import load_target  # noqa: E402
from edge_gmm.runtime.bundle import Bundle, load_schema  # noqa: E402
from edge_gmm.runtime.stream import StreamGraphs  # noqa: E402

MODALITIES = TINY_MODALITIES  # the session-trained model's (tiny_trained)
TARGETS = {"fp32": "cpu-onnx-fp32", "int8": "cpu-onnx-int8"}
GRAPHS = ["window", "encoder.imu", "encoder.audio", "fusion"]
STREAM_KEYS = {"dim", "batch", "layouts", "graphs", "connects", "parity", "metrics", "lint"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tiny_trained):
    """The session's briefly trained student-tiny and its training windows (calibration and evaluation, as
    tests/export/test_export_pipeline.py: one borderline window cannot flip the INT8 gate)."""
    _, w, fresh = tiny_trained
    return fresh(), w


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    """precision -> ExportResult of that CPU target."""
    model, w = trained
    root = tmp_path_factory.mktemp("bundles")
    return {p: export_model(model, target=load_target(t), out=root / t, calib_windows=w, eval_windows=w)
            for p, t in TARGETS.items()}


def _window(w, i, mask=None):
    return {m: w.inputs[m][i] for m in MODALITIES}, (w.mask[i] if mask is None else mask)


def _whole(sess, inputs, mask):
    feed = {m: np.ascontiguousarray(inputs[m][None], dtype=np.float32) for m in MODALITIES}
    feed["mask"] = np.asarray(mask, np.float32)[None]
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


@pytest.mark.parametrize("precision", list(TARGETS))
def test_every_graph_is_shipped_hashed_and_described(exports, precision):
    res = exports[precision]
    b = Bundle.open(res.bundle)
    assert b.graph_names == GRAPHS
    st = b.stream
    assert set(st) == STREAM_KEYS and st["batch"] == 1 and st["dim"] == 32
    want = {"fp32"} if precision == "fp32" else {"fp32", "int8"}
    checked = b.verify()
    for name in GRAPHS[1:]:
        g = b.graph(name)
        assert set(g.precisions) == want, name
        for p in want:
            assert g.artifact_path(p).is_file() and g.artifacts[p]["file"] in checked
            assert g.artifacts[p]["file"] == f"stream.{name}.{p}.onnx"
        assert st["lint"][name]["ok"], name
    layouts = st["layouts"]
    assert [t.shape for t in b.graph("encoder.imu").inputs] == [(1, 6, layouts["imu"]["span"])]
    assert [t.shape for t in b.graph("encoder.audio").outputs] == [(1, 1, 32)]
    fusion = b.graph("fusion")
    assert [t.name for t in fusion.inputs] == ["tokens_imu", "tokens_audio", "mask_imu", "mask_audio"]
    assert fusion.inputs[1].shape == (1, layouts["audio"]["tokens"], 32) and fusion.inputs[3].shape == (1, layouts["audio"]["tokens"])
    assert [t.name for t in fusion.outputs] == [t.name for t in b.outputs]
    assert max(st["parity"]["max_abs_diff"].values()) <= 1e-4 and st["parity"]["reference"] == "torch whole-window model"
    assert set(st["metrics"]) == want and st["metrics"][precision]["top1_agreement"]["state"] >= 0.99
    assert res.timings["stream_s"] > 0
    if precision == "int8":  # each graph calibrated on its own inputs; log-mel kept FP32 in the encoders
        assert b.graph("encoder.audio").artifacts["int8"]["calibration_calls"] > 0
        assert b.graph("encoder.audio").artifacts["int8"]["fp32_nodes"]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(b.manifest, load_schema())


def test_a_changed_stream_file_is_refused(exports, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(exports["int8"].bundle, copy)
    f = copy / "stream.fusion.int8.onnx"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="stream.fusion.int8.onnx"):
        Bundle.open(copy).verify()


@pytest.mark.parametrize("precision", list(TARGETS))
def test_encoder_calls_and_fusion_equal_the_whole_window_graph(exports, trained, precision):
    _, w = trained
    b = Bundle.open(exports[precision].bundle)
    sess = ev.session(b.artifact_path("fp32"))
    with StreamGraphs(b, "onnxrt", precision="fp32", threads=1) as g:
        for i in range(0, ev.n_windows(w), 4):
            got, want = g.window(*_window(w, i)), _whole(sess, *_window(w, i))
            assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-4, i
            assert got["logits_state"].argmax() == want["logits_state"].argmax(), i


def test_int8_split_metrics_are_what_the_manifest_records(exports, trained):
    from edge_gmm.export.stream_export import run_split

    _, w = trained
    b = Bundle.open(exports["int8"].bundle)
    out8 = run_split(b, "int8", w)
    out32 = ev.run_onnx(b.artifact_path("fp32"), w, MODALITIES, 1)
    recorded = b.stream["metrics"]["int8"]
    assert ev.agreement(out8, out32, b.tasks) == recorded["top1_agreement"]
    assert ev.accuracy(out8, w.labels, b.tasks) == recorded["accuracy"]


def test_a_masked_modality_equals_the_whole_window_graph_with_its_mask_0(exports, trained):
    _, w = trained
    b = Bundle.open(exports["int8"].bundle)
    sess = ev.session(b.artifact_path("fp32"))
    with StreamGraphs(b, "onnxrt", precision="fp32", threads=1) as g:
        for col, m in enumerate(MODALITIES):
            mask = np.ones(len(MODALITIES), np.float32)
            mask[col] = 0
            for i in (0, ev.n_windows(w) // 2):
                inputs, _ = _window(w, i)
                inputs = dict(inputs, **{m: np.full_like(inputs[m], np.nan)})  # a dead sensor's samples never leak
                got, want = g.window(inputs, mask), _whole(sess, inputs, mask)
                assert all(np.isfinite(v).all() for v in got.values()), m
                assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-4, m


def test_bundle_inspect_shows_the_graphs_and_how_they_connect(exports, cli, tmp_path):
    code, out, _ = cli("bundle", "inspect", exports["int8"].bundle)
    assert code == 0
    for text in ("streaming graphs", "encoder.imu", "encoder.audio", "samples 1x6x50", "tokens_audio 1x10x32",
                 "mask_imu 1x7", "connects:", "stream parity", "stream metrics"):
        assert text in out, text
    row = next(line for line in out.splitlines() if line.startswith("fusion "))
    assert "fp32, int8" in row and row.rstrip().endswith("ok")
    code, out, _ = cli("bundle", "inspect", exports["int8"].bundle, "--json")
    assert code == 0 and set(json.loads(out)["stream"]["graphs"]) == set(GRAPHS[1:])

    # a bundle without the split (an older export): the output it always had
    old = tmp_path / "old"
    shutil.copytree(exports["fp32"].bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["stream"]
    (old / "manifest.json").write_text(json.dumps(m))
    code, out, _ = cli("bundle", "inspect", old)
    assert code == 0 and "streaming graphs" not in out and "artifacts:" in out


@pytest.mark.parametrize("precision", list(TARGETS))
def test_doctor_checks_the_split_on_the_golden_windows(exports, cli, precision):
    """On the device `doctor` (and so `deploy`) runs the golden windows through the encoder and fusion graphs too,
    bounded by what the split scored on them at export."""
    stream_error = exports[precision].manifest["golden"]["stream_error"]
    assert set(stream_error) == {"fp32", precision} and stream_error["fp32"] < 1e-4
    code, out, err = cli("doctor", "--bundle", exports[precision].bundle, "--runner", "onnxrt", "--runs", "3", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["result"] == "pass" and r["stream"]["ok"] and r["stream"]["windows"] == r["golden"]["windows"]
    assert r["stream"]["agreement"]["state"] >= 0.9 and r["stream"]["error_bound"] >= 2 * stream_error[precision]
    code, out, _ = cli("doctor", "--bundle", exports[precision].bundle, "--runner", "onnxrt", "--runs", "3")
    assert "stream:   the same windows through the encoder graphs + fusion graph" in out


def test_a_fusion_graph_that_returns_wrong_numbers_fails_the_doctor(exports, cli, monkeypatch):
    """A stand-in for a broken engine of the fusion graph alone (the whole-window engine is right): refused."""
    from edge_gmm.runtime.runners.onnxrt import OnnxRuntimeRunner

    real = OnnxRuntimeRunner.infer

    def infer(self, feed, *, check=True):
        out = real(self, feed, check=check)
        if self.graph.name == "fusion":
            out = {k: (v[..., ::-1].copy() if k.startswith("logits_") else v) for k, v in out.items()}
        return out

    monkeypatch.setattr(OnnxRuntimeRunner, "infer", infer)
    code, out, err = cli("doctor", "--bundle", exports["fp32"].bundle, "--runner", "onnxrt", "--runs", "3", "--json")
    assert code == 2
    r = json.loads(out)
    assert r["result"] == "mismatch" and r["golden"]["ok"] and not r["stream"]["ok"]
    assert "streaming split:" in err and "logits_state" in err and "Traceback" not in err


@pytest.mark.parametrize("breakage", [
    lambda st: st["graphs"].pop("fusion"),
    lambda st: st.update(dim="32"),
    lambda st: st["graphs"]["encoder.imu"]["inputs"][0].update(shape=[1, -6, 50]),
    lambda st: st["graphs"]["encoder.imu"]["artifacts"]["fp32"].update(file="../model.fp32.onnx"),
    lambda st: st["graphs"].update({"decoder.imu": st["graphs"]["encoder.imu"]}),
], ids=["no-fusion", "dim-string", "negative-shape", "file-outside", "unknown-graph"])
def test_a_malformed_stream_section_is_a_bundle_error(exports, cli, tmp_path, breakage):
    copy = tmp_path / "b"
    shutil.copytree(exports["fp32"].bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    breakage(m["stream"])
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="stream"):
        Bundle.open(copy)
    code, _, err = cli("bundle", "inspect", copy)
    assert code == 2 and "stream" in err
