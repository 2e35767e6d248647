"""Runners: one interface, input validation with clear errors, registry by name, import-free failures."""

import subprocess
import sys

import numpy as np
import pytest
from test_runtime_bundle import W, manifest_stub, tiny_onnx

from edge_gmm.errors import BundleError, ConfigError, MissingDependencyError
from edge_gmm.runtime.bundle import write_bundle
from edge_gmm.runtime.runners import RUNNERS, create_runner


@pytest.fixture
def bundle_dir(tmp_path):
    return write_bundle(tmp_path / "bundle", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "src.onnx")})


def feed(mask=1.0):
    imu = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    return {"imu": imu, "mask": np.full((1, 1), mask, np.float32)}


def test_onnxrt_runner_computes_the_graph(bundle_dir):
    f = feed()
    with create_runner("onnxrt", bundle_dir, threads=1) as r:
        out = r.infer(f)
    emb = f["imu"].mean(-1)
    np.testing.assert_allclose(out["embedding"], emb, rtol=1e-5)
    np.testing.assert_allclose(out["logits_state"], emb @ W, rtol=1e-5)
    assert not r.is_active


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("mask"), r"missing \['mask'\]"),
        (lambda f: f.update(audio=np.zeros((1, 8), np.float32)), r"unexpected \['audio'\]"),
        (lambda f: f.update(imu=np.zeros((1, 4, 9), np.float32)), r"'imu' has shape \(1, 4, 9\), the model expects \(1, 4, 8\)"),
        (lambda f: f.update(imu=f["imu"].astype(np.float64)), r"'imu' has dtype float64, the model expects float32"),
        (lambda f: f.update(mask=[[1.0]]), r"'mask' must be a numpy array"),
    ],
)
def test_infer_rejects_a_wrong_feed_naming_the_input(bundle_dir, change, message):
    f = feed()
    change(f)
    with create_runner("onnxrt", bundle_dir) as r:
        with pytest.raises(ConfigError, match=message):
            r.infer(f)


def test_infer_before_activate_and_unknown_precision_are_clear(bundle_dir):
    r = create_runner("onnxrt", bundle_dir)
    with pytest.raises(BundleError, match="not active"):
        r.infer(feed())
    with pytest.raises(BundleError, match="no int8 artifact; this bundle has fp32"):
        create_runner("onnxrt", bundle_dir, precision="int8")


def test_registry_lists_backends_and_rejects_unknown_names(bundle_dir):
    assert RUNNERS.names() == ["onnxrt", "tensorrt", "torch"]
    with pytest.raises(ConfigError, match="onnxrt, tensorrt, torch"):
        create_runner("openvino", bundle_dir)
    with pytest.raises(ConfigError, match="unknown provider"):
        create_runner("onnxrt", bundle_dir, provider="rocm")


def test_tensorrt_runner_without_tensorrt_says_what_is_missing_and_imports_nothing_heavy(bundle_dir):
    code = (
        "import sys\n"
        "from edge_gmm.runtime.runners import create_runner\n"
        "from edge_gmm.errors import MissingDependencyError\n"
        f"r = create_runner('tensorrt', {str(bundle_dir)!r})\n"
        "try:\n    r.activate()\nexcept MissingDependencyError as e:\n    print('MSG', str(e).splitlines()[0])\n"
        "print('HEAVY', sorted(m for m in ('torch', 'onnx', 'tensorrt', 'pycuda') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "MSG the tensorrt runner needs tensorrt" in out
    assert "HEAVY []" in out


def test_torch_runner_refuses_int8_and_cpu_fp16_and_needs_a_checkpoint(bundle_dir):
    with pytest.raises(ConfigError, match="int8"):
        create_runner("torch", bundle_dir, precision="int8")
    with pytest.raises(ConfigError, match="CUDA"):
        create_runner("torch", bundle_dir, precision="fp16")
    with pytest.raises((ConfigError, MissingDependencyError), match="run directory|torch"):
        create_runner("torch", bundle_dir).activate()


def test_bench_rows_have_latency_and_flops_and_skip_absent_engines(bundle_dir):
    from edge_gmm.runtime.bench import bench_bundle

    rows = bench_bundle(bundle_dir, runners=("onnxrt", "tensorrt"), threads=(1,), iters=20, warmup=2, max_s=2)
    ort = next(r for r in rows if r["runner"] == "onnxrt")
    assert ort["status"] == "ok" and 0 < ort["median_ms"] <= ort["p99_ms"] and ort["gflops"] > 0 and ort["peak_pct"] > 0
    trt = next(r for r in rows if r["runner"] == "tensorrt")
    assert trt["status"].startswith("skipped: the tensorrt runner needs")


def test_a_verified_bundle_whose_onnx_does_not_load_is_a_bundle_error(tmp_path):
    # The hashes match (the file was bundled as it is) but it is no ONNX model: a BundleError (CLI exit 2) naming it.
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    bundle = write_bundle(tmp_path / "bad", manifest_stub(), {"fp32": junk})
    with pytest.raises(BundleError, match="cannot load this model"):
        create_runner("onnxrt", bundle, precision="fp32").activate()
