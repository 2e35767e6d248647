"""The TensorRT runner's API-calling code (build, timing cache, precision pinning, engine cache, device
buffers, execute_async_v3) driven against a stand-in of the tensorrt and cuda-python modules.

TensorRT cannot be installed here (FIELD-NOTES), so this is the one place a fake is used (trt_fake_api: the
API surface of each TensorRT version, engines "run" with onnxruntime, "device memory" in numpy buffers). It
proves the runner's own logic and calls are consistent; it does not prove TensorRT accepts them (that needs
a Jetson or a CUDA box with TensorRT). The per-version branches are in test_runtime_tensorrt_versions.py.
"""

import json

import numpy as np
import pytest
from test_runtime_bundle import manifest_stub, tiny_onnx
from trt_fake_api import install_fakes

from edge_gmm.config import ExportTarget
from edge_gmm.runtime.bundle import write_bundle
from edge_gmm.runtime.runners import create_runner


@pytest.fixture(autouse=True)
def device_home(tmp_path, monkeypatch):
    """The device's $EDGE_GMM_HOME, where engine records are kept (never the real ~/edge-gmm)."""
    monkeypatch.setenv("EDGE_GMM_HOME", str(tmp_path / "edge-gmm-home"))
    return tmp_path / "edge-gmm-home"


@pytest.fixture
def fakes(monkeypatch):
    state = install_fakes(monkeypatch, "10.3.0")  # JetPack 6.1/6.2's TensorRT
    return state.calls, state.memory


def test_runner_builds_caches_and_runs_the_engine_on_device_buffers(fakes, tmp_path):
    calls, memory = fakes
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    target = ExportTarget(name="t", precision="fp16", workspace_mb=256, fp32_layers=["pool"])
    feed = {"imu": np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32), "mask": np.ones((1, 1), np.float32)}
    with create_runner("onnxrt", b) as ref:
        expected = ref.infer(feed)
    with create_runner("tensorrt", b, precision="fp16", target=target) as r:
        got = r.infer(feed)
        engine = r.plan.engine_path
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
    assert memory == {}  # every device buffer freed on deactivate
    assert len(calls) == 1 and calls[0]["network_flags"] == 0  # 10.x: explicit batch only, weakly typed
    assert {k: calls[0][k] for k in ("flags", "pool", "pinned", "device")} == \
        {"flags": ["FP16", "OBEY_PRECISION_CONSTRAINTS"], "pool": {"workspace": 256 << 20}, "pinned": ["pool"], "device": "GPU"}
    assert engine.is_file() and engine.parent == b / "engines" and "fakegpu-sm87-trt10.3.0-fp16" in engine.name
    assert "trtexec" in engine.with_suffix(".trtexec.sh").read_text()
    assert next((b / "engines").glob("timing-*.cache")).read_bytes() == b"+timings"

    with create_runner("tensorrt", b, precision="fp16", target=target) as r:  # cached: no second build
        r.infer(feed)
    assert len(calls) == 1


def test_dla_build_sets_device_type_and_gpu_fallback(fakes, tmp_path):
    calls, _ = fakes
    m = manifest_stub()
    b = write_bundle(tmp_path / "b", m, {"fp32": tiny_onnx(tmp_path / "s.onnx"), "int8": tiny_onnx(tmp_path / "q.onnx")})
    target = ExportTarget(name="dla", precision="int8", dla_core=1, runtime="tensorrt", tensorrt_version="10.3")
    with create_runner("tensorrt", b, precision="int8", target=target) as r:
        assert r.plan.dla_core == 1
    assert calls[0]["device"] == "DLA" and {"INT8", "FP16", "GPU_FALLBACK"} <= set(calls[0]["flags"])


def test_a_planted_engine_or_timing_cache_is_refused_by_verify_and_never_loaded(fakes, tmp_path, device_home, cli):
    import onnx
    from onnx import numpy_helper

    from edge_gmm.errors import BundleError
    from edge_gmm.runtime.bundle import Bundle

    calls, _ = fakes
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    feed = {"imu": np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32), "mask": np.ones((1, 1), np.float32)}
    with create_runner("onnxrt", b) as ref:
        expected = ref.infer(feed)
    with create_runner("tensorrt", b, precision="fp32") as r:
        engine = r.plan.engine_path
    assert f"engines/{engine.name}" in Bundle.open(b).verify()  # recorded when built
    assert (device_home / "trust" / "engines.json").is_file()

    evil = onnx.load(str(tiny_onnx(tmp_path / "evil.onnx")))  # another model behind the same engine name
    evil.graph.initializer[0].CopyFrom(numpy_helper.from_array(-np.ones((4, 3), np.float32), "W"))
    onnx.save(evil, str(tmp_path / "evil.onnx"))
    engine.write_text(json.dumps({"onnx": str(tmp_path / "evil.onnx")}))  # a fake engine names the ONNX it runs
    with pytest.raises(BundleError, match="not an engine file edge-gmm built on this device"):
        Bundle.open(b).verify()
    code, _, err = cli("bundle", "verify", b)
    assert code == 2 and engine.name in err and "--rebuild" in err

    with create_runner("tensorrt", b, precision="fp32") as r:  # the runner rebuilds instead of loading it
        got = r.infer(feed)
    assert len(calls) == 2
    np.testing.assert_allclose(got["logits_state"], expected["logits_state"], rtol=1e-6)
    assert Bundle.open(b).verify()

    cache = next((b / "engines").glob("timing-*.cache"))
    cache.write_bytes(b"planted")
    with pytest.raises(BundleError, match=cache.name):
        Bundle.open(b).verify()
    with create_runner("tensorrt", b, precision="fp32", rebuild=True):
        pass
    assert cache.read_bytes() == b"+timings"  # built without the planted cache, then recorded again
    assert Bundle.open(b).verify()
