"""The TensorRT runner on each TensorRT API it supports (8.5 JetPack 5, 10.x JetPack 6/7, 11.x x86 pip), against
the per-version stand-in in trt_fake_api: which network flags, builder flags and ONNX each build uses, pinned
host buffers, the engine's I/O checked against the manifest, and nothing left allocated when activation fails
half-way. What the fake cannot show: that real TensorRT accepts these calls (docs/deploy.md, doctor)."""

import logging

import numpy as np
import onnx
import pytest
from test_runtime_bundle import manifest_stub, tiny_onnx
from trt_fake_api import install_fakes

from edge_gmm.config import ExportTarget
from edge_gmm.errors import BundleError, ConfigError, MissingDependencyError, RuntimeFailure
from edge_gmm.export.fp16 import convert_to_fp16
from edge_gmm.runtime.bundle import Bundle, write_bundle
from edge_gmm.runtime.runners import create_runner

FEED = {"imu": np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32), "mask": np.ones((1, 1), np.float32)}
FP16 = ExportTarget(name="t", precision="fp16", workspace_mb=256, fp32_layers=["pool"])


@pytest.fixture(autouse=True)
def device_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_GMM_HOME", str(tmp_path / "edge-gmm-home"))


def fp16_bundle(tmp_path, manifest=None):
    """A bundle as an fp16 export writes it: the FP32 ONNX and the fp16 one (FP32 I/O, "pool" kept FP32)."""
    fp32 = tiny_onnx(tmp_path / "s.onnx")
    onnx.save(convert_to_fp16(onnx.load(str(fp32)), ("pool",)), str(tmp_path / "h.onnx"))
    return write_bundle(tmp_path / "b", manifest or manifest_stub(), {"fp32": fp32, "fp16": tmp_path / "h.onnx"})


# version -> (network flags bits passed to create_network, builder flags, ONNX parsed, layers pinned to FP32)
EXPECTED_FP16 = {
    "8.5.2.2": (1 << 0, ["FP16", "OBEY_PRECISION_CONSTRAINTS"], "model.fp32.onnx", ["pool"]),  # JetPack 5.1
    "10.3.0": (0, ["FP16", "OBEY_PRECISION_CONSTRAINTS"], "model.fp32.onnx", ["pool"]),  # JetPack 6.1/6.2
    "10.16.0": (0, ["FP16", "OBEY_PRECISION_CONSTRAINTS"], "model.fp32.onnx", ["pool"]),  # JetPack 7.2
    "11.1.0": (1 << 0, [], "model.fp16.onnx", []),  # strongly typed: the fp16 graph as-is, STRONGLY_TYPED = 0
}


@pytest.mark.parametrize("version", sorted(EXPECTED_FP16))
def test_fp16_engine_is_built_the_way_each_tensorrt_takes_it_and_runs_from_pinned_buffers(monkeypatch, tmp_path, version):
    state = install_fakes(monkeypatch, version)
    b = fp16_bundle(tmp_path)
    with create_runner("tensorrt", b, precision="fp16", target=FP16) as r:
        got = r.infer(FEED)
        source = r.plan.source_precision
    with create_runner("onnxrt", b, precision=source) as ref:
        expected = ref.infer(FEED)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
    net_flags, flags, onnx_file, pinned = EXPECTED_FP16[version]
    (call,) = state.calls
    assert (call["network_flags"], call["flags"], call["onnx"].split("/")[-1], call["pinned"]) == (net_flags, flags, onnx_file, pinned)
    copies = [c[1] for c in state.log if isinstance(c, tuple)]
    assert copies and set(copies) == {"pinned->device", "device->pinned"}  # async copies only ever from pinned memory
    assert state.memory == {}  # device buffers, pinned buffers and the stream all released
    assert any(f.startswith("engines/") and f.endswith(".engine") for f in Bundle.open(b).verify())  # engine recorded


def test_tensorrt_11_int8_builds_the_qdq_graph_without_precision_flags(monkeypatch, tmp_path):
    state = install_fakes(monkeypatch, "11.1.0")
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx"), "int8": tiny_onnx(tmp_path / "q.onnx")})
    target = ExportTarget(name="dla", precision="int8", dla_core=0)
    with create_runner("tensorrt", b, precision="int8", target=target) as r:
        r.infer(FEED)
    (call,) = state.calls
    assert call["flags"] == ["GPU_FALLBACK"] and call["device"] == "DLA" and call["onnx"].endswith("model.int8.onnx")


def test_tensorrt_11_fp16_without_an_fp16_artifact_is_refused_before_anything_runs(monkeypatch, tmp_path):
    state = install_fakes(monkeypatch, "11.1.0")
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    with pytest.raises(ConfigError, match=r"strongly typed.*lacks") as e:
        create_runner("tensorrt", b, precision="fp16").activate()
    assert e.value.exit_code == 2 and "model.fp16.onnx" in e.value.hint
    assert state.calls == [] and state.memory == {}


def test_tensorrt_8_2_is_refused_naming_the_version_before_any_cuda_call(monkeypatch, tmp_path):
    state = install_fakes(monkeypatch, "8.2.1")  # JetPack 4.6: no named tensors, no memory pools
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    with pytest.raises(MissingDependencyError, match=r"TensorRT 8\.2\.1 is too old.*8\.5") as e:
        create_runner("tensorrt", b, precision="fp32").activate()
    assert e.value.exit_code == 2 and "JetPack 5.1" in e.value.hint and "onnxrt" in e.value.hint
    assert state.log == [] and state.calls == []


def test_a_tensorrt_newer_than_tested_runs_with_a_warning(monkeypatch, tmp_path, caplog):
    install_fakes(monkeypatch, "12.0.0")
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    with caplog.at_level(logging.WARNING, "edge_gmm.runtime.tensorrt"), create_runner("tensorrt", b, precision="fp32") as r:
        r.infer(FEED)
    assert "TensorRT 12.0.0 is newer" in caplog.text


@pytest.mark.parametrize("version,api,present_in", [
    ("8.5.2.2", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "10.3.0"),  # 9.0+
    ("10.3.0", "Builder.build_engine", "8.5.2.2"),  # removed in 10
    ("10.3.0", "ICudaEngine.get_binding_shape", "8.5.2.2"),
    ("10.3.0", "IBuilderConfig.max_workspace_size", "8.5.2.2"),
    ("11.1.0", "BuilderFlag.FP16", "10.16.0"),  # removed in 11: strongly typed only
    ("11.1.0", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "10.3.0"),
    ("11.1.0", "ILayer.set_output_type", "10.3.0"),
    ("8.2.1", "IExecutionContext.execute_async_v3", "8.5.2.2"),  # named tensors: 8.5+
    ("8.2.1", "IBuilderConfig.set_memory_pool_limit", "8.5.2.2"),
])
def test_the_stand_in_lacks_what_that_tensorrt_lacks(monkeypatch, version, api, present_in):
    import sys

    owner, attr = api.split(".")
    install_fakes(monkeypatch, present_in)
    assert hasattr(getattr(sys.modules["tensorrt"], owner), attr)
    install_fakes(monkeypatch, version)
    with pytest.raises(AttributeError):
        getattr(getattr(sys.modules["tensorrt"], owner), attr)


FAILURES = [  # (step, its n-th call fails, error the user gets)
    ("cudaSetDevice", 1, RuntimeFailure),
    ("deserialize_cuda_engine", 1, BundleError),
    ("create_execution_context", 1, RuntimeFailure),
    ("cudaStreamCreate", 1, RuntimeFailure),
    ("cudaMalloc", 3, RuntimeFailure),  # the third tensor's device buffer
    ("cudaMallocHost", 2, RuntimeFailure),
    ("set_tensor_address", 4, RuntimeFailure),  # the last tensor
]


@pytest.mark.parametrize("step,nth,error", FAILURES)
def test_activation_failing_half_way_releases_everything_and_a_restart_works(monkeypatch, tmp_path, step, nth, error):
    state = install_fakes(monkeypatch, "10.3.0", fail={step: nth})
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    r = create_runner("tensorrt", b, precision="fp32")
    with pytest.raises(error):
        r.activate()
    assert state.memory == {} and not r.is_active  # no stream, device or pinned buffer left behind
    with r:  # the step fails only once: the same runner starts on the next try (what a restart does)
        assert set(r.infer(FEED)) == {"logits_state", "embedding"}
    assert state.memory == {}


def test_engine_io_that_differs_from_the_manifest_is_refused_before_any_buffer_or_copy(monkeypatch, tmp_path):
    state = install_fakes(monkeypatch, "8.5.2.2")
    m = manifest_stub()
    m["outputs"][1]["shape"] = [1, 5]  # the engine's embedding is (1, 4)
    m["inputs"][1]["dtype"] = "float16"
    b = write_bundle(tmp_path / "b", m, {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    with pytest.raises(BundleError) as e:
        create_runner("tensorrt", b, precision="fp32").activate()
    msg = str(e.value)
    assert "output 'embedding' has shape (1, 4) in the engine, (1, 5) in the manifest" in msg
    assert "input 'mask' has dtype float32 in the engine, float16 in the manifest" in msg
    assert e.value.exit_code == 2
    assert not [c for c in state.log if c in ("cudaMalloc", "cudaMallocHost") or isinstance(c, tuple)]
    assert state.memory == {}


def test_engine_dry_run_plans_for_the_profiles_tensorrt(tmp_path, cli):
    import json
    from pathlib import Path

    m = manifest_stub()
    m["target"] = {"name": "x", "precision": "fp16", "batch": 1, "opset": 18, "workspace_mb": 512, "dla_core": -1}
    b = fp16_bundle(tmp_path, m)
    text = (Path(__file__).parents[2] / "devices" / "x86-cuda.toml").read_text()  # the shipped profile, on TensorRT 11
    prof = tmp_path / "x86-trt11.toml"
    prof.write_text(text.replace('name = "x86-cuda"', 'name = "x86-trt11"').replace('tensorrt = "10.x"', 'tensorrt = "11.1"'))
    code, out, err = cli("engine", "build", b, "--profile", prof, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["strongly_typed"] and plan["flags"] == [] and plan["trtexec"].split()[1].endswith("model.fp16.onnx")
    assert "--fp16" not in plan["trtexec"]
