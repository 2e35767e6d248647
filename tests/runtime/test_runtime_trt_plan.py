"""What TensorRT build each target and device produces: flags, DLA, workspace, cache key, trtexec line.
Pure logic: runs without TensorRT."""

from pathlib import Path

import pytest

from edge_gmm.config import to_dict
from edge_gmm.errors import ConfigError
from edge_gmm.export.targets import load_target
from edge_gmm.runtime.runners.trt_plan import GpuInfo, engine_cache_key, gpu_from_profile, plan_build

ORIN_NANO = GpuInfo("Orin", "8.7", "10.3.0", dla_cores=0)
AGX_ORIN = GpuInfo("Orin", "8.7", "10.3.0", dla_cores=2)
ARTS = {
    "fp32": {"file": "model.fp32.onnx", "sha256": "a" * 64, "fp32_nodes": ["logmel/node_Conv_1", "logmel/node_log"]},
    "int8": {"file": "model.int8.onnx", "sha256": "b" * 64, "fp32_nodes": ["logmel/node_Conv_1"]},
}


def plan_for(target_name, gpu=ORIN_NANO, arts=ARTS):
    t = to_dict(load_target(target_name))
    return plan_build(artifacts=arts, bundle_root=Path("/b"), engine_dir=Path("/b/engines"), precision=t["precision"], gpu=gpu,
                      workspace_mb=t["workspace_mb"], dla_core=t["dla_core"], gpu_fallback=t["gpu_fallback"],
                      fp32_layers=tuple(t["fp32_layers"]))


def test_int8_target_builds_from_qdq_with_int8_and_fp16_and_pins_logmel():
    p = plan_for("jetson-orin-nano-int8")
    assert p.source_precision == "int8" and p.onnx_path == Path("/b/model.int8.onnx")
    assert set(p.flags) == {"INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert p.dla_core == -1 and not p.gpu_fallback
    assert p.workspace_bytes == 1024 << 20
    cmd = p.trtexec_command()
    assert "--int8" in cmd and "--fp16" in cmd and "--memPoolSize=workspace:1024M" in cmd
    assert "--layerPrecisions=logmel/node_Conv_1:fp32" in cmd and "--precisionConstraints=obey" in cmd
    assert not any(c.startswith("--useDLACore") for c in cmd)


def test_fp16_target_builds_from_fp32_onnx_with_fp16_flag():
    p = plan_for("jetson-orin-nx-fp16")
    assert p.source_precision == "fp32" and "FP16" in p.flags and "INT8" not in p.flags
    assert p.fp32_layer_names == ("logmel/node_Conv_1", "logmel/node_log")


def test_cpu_fp32_target_sets_no_precision_flags():
    p = plan_for("cpu-onnx-fp32")
    assert p.flags == () and "--fp16" not in p.trtexec_command() and "--int8" not in p.trtexec_command()


def test_dla_target_uses_core_0_with_gpu_fallback_on_agx_orin():
    p = plan_for("jetson-agx-orin-int8-dla", gpu=AGX_ORIN)
    assert p.dla_core == 0 and "GPU_FALLBACK" in p.flags and p.gpu_fallback
    cmd = p.trtexec_command()
    assert "--useDLACore=0" in cmd and "--allowGPUFallback" in cmd
    assert "dla0" in p.cache_key and p.workspace_bytes == 4096 << 20


def test_dla_target_on_a_board_without_dla_is_refused():
    with pytest.raises(ConfigError, match="DLA core 0 requested but Orin has 0"):
        plan_for("jetson-agx-orin-int8-dla", gpu=ORIN_NANO)


def test_fp32_on_dla_and_missing_int8_artifact_are_refused():
    with pytest.raises(ConfigError, match="DLA runs only fp16 or int8"):
        plan_build(artifacts=ARTS, bundle_root=Path("/b"), engine_dir=Path("/e"), precision="fp32", gpu=AGX_ORIN, dla_core=0)
    with pytest.raises(ConfigError, match="lacks"):
        plan_for("jetson-orin-nano-int8", arts={"fp32": ARTS["fp32"]})


def test_engine_cache_key_changes_with_gpu_capability_tensorrt_precision_and_model():
    base = engine_cache_key(ORIN_NANO, "int8", "a" * 64)
    assert base.startswith("orin-sm87-trt10.3.0-int8-")
    others = {
        engine_cache_key(GpuInfo("NVIDIA H100", "8.7", "10.3.0"), "int8", "a" * 64),
        engine_cache_key(GpuInfo("Orin", "9.0", "10.3.0"), "int8", "a" * 64),
        engine_cache_key(GpuInfo("Orin", "8.7", "8.6.2"), "int8", "a" * 64),
        engine_cache_key(ORIN_NANO, "fp16", "a" * 64),
        engine_cache_key(ORIN_NANO, "int8", "c" * 64),
    }
    assert base not in others and len(others) == 5


def test_timing_cache_is_shared_across_precisions_of_one_gpu_and_tensorrt():
    a, b = plan_for("jetson-orin-nano-int8"), plan_for("jetson-orin-nx-fp16")
    assert a.timing_cache == b.timing_cache and a.engine_path != b.engine_path


def test_gpu_info_from_device_profiles():
    from edge_gmm.devices.profiles import load_profile

    g = gpu_from_profile(load_profile("jetson-agx-orin"))
    assert g.compute_capability == "8.7" and g.dla_cores == 2 and g.tensorrt_version.startswith("10")
    with pytest.raises(ConfigError, match="not a TensorRT device"):
        gpu_from_profile(load_profile("cpu-x86_64"))


def test_cli_engine_dry_run_prints_the_trtexec_line(tmp_path, cli):
    from test_runtime_bundle import manifest_stub, tiny_onnx

    from edge_gmm.runtime.bundle import write_bundle

    m = manifest_stub()
    m["target"] = {"name": "x", "precision": "fp16", "batch": 1, "opset": 18, "workspace_mb": 512, "dla_core": -1}
    b = write_bundle(tmp_path / "b", m, {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    code, out, _ = cli("engine", "build", b, "--profile", "jetson-orin-nano", "--dry-run")
    assert code == 0 and "trtexec --onnx=" in out and "--fp16" in out and "workspace:512M" in out
    code, _, err = cli("engine", "build", b)
    assert code == 2 and "tensorrt" in err


ARTS16 = {**ARTS, "fp16": {"file": "model.fp16.onnx", "sha256": "c" * 64, "fp32_nodes": ["logmel/node_Conv_1"]}}


def plan_on(version, precision, arts=ARTS16, **kw):
    return plan_build(artifacts=arts, bundle_root=Path("/b"), engine_dir=Path("/e"), precision=precision,
                      gpu=GpuInfo("GPU", "8.9", version, dla_cores=2), **kw)


def test_tensorrt_11_builds_each_precision_from_its_own_graph_without_precision_flags():
    for precision, onnx_file in (("fp32", "model.fp32.onnx"), ("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx")):
        p = plan_on("11.1.0", precision)
        assert p.strongly_typed and p.network_flags == ("STRONGLY_TYPED",) and p.onnx_path.name == onnx_file
        assert p.flags == () and p.fp32_layer_names == ()
        cmd = p.trtexec_command()
        assert not {"--fp16", "--int8", "--precisionConstraints=obey"} & set(cmd)  # trtexec 11 has none of them
    assert plan_on("11.1.0", "int8", dla_core=0).flags == ("GPU_FALLBACK",)


def test_weakly_typed_tensorrt_keeps_flags_and_spells_explicit_batch_only_before_10():
    p85, p10 = plan_on("8.5.2.2", "fp16"), plan_on("10.x", "fp16")  # "10.x": the x86-cuda profile's spelling
    assert p85.network_flags == ("EXPLICIT_BATCH",) and p10.network_flags == ()
    for p in (p85, p10):
        assert not p.strongly_typed and p.onnx_path.name == "model.fp32.onnx" and "FP16" in p.flags


def test_tensorrt_11_fp16_needs_the_fp16_artifact_and_old_tensorrt_is_refused():
    from edge_gmm.errors import MissingDependencyError

    with pytest.raises(ConfigError, match="strongly typed"):
        plan_on("11.0", "fp16", arts=ARTS)
    with pytest.raises(MissingDependencyError, match=r"TensorRT 8\.2 is too old"):
        plan_on("8.2", "fp16")
    with pytest.raises(ConfigError, match="cannot read the TensorRT version"):
        plan_on("latest", "fp16")
