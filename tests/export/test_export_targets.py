"""Export targets: the shipped TOMLs load and say what they promise; names and paths; clear errors."""

import pytest

from edge_gmm.errors import ConfigError
from edge_gmm.export.targets import TARGETS_DIR, list_targets, load_target

SHIPPED = ["cpu-onnx-fp32", "cpu-onnx-int8", "jetson-agx-orin-int8-dla", "jetson-agx-thor-fp16", "jetson-agx-xavier-fp16",
           "jetson-orin-jp5-fp16", "jetson-orin-jp6.0-fp16", "jetson-orin-jp7.2-fp16", "jetson-orin-nano-int8",
           "jetson-orin-nx-fp16", "jetson-xavier-nx-fp16", "x86-cuda-fp16"]


def test_every_shipped_target_loads_with_its_promises():
    targets = {t.name: t for t in list_targets()}
    assert sorted(targets) == SHIPPED
    assert [t.name for t in list_targets(include_unsupported=True) if t.name not in targets] == ["jetson-nano-fp16"]
    for t in targets.values():
        assert t.batch == 1 and t.min_opset <= t.opset <= t.max_opset
        if t.runtime == "tensorrt":
            assert t.tensorrt_version and t.workspace_mb > 0
        if t.precision == "int8":
            assert t.calibration_windows > 0 and "logmel" in t.fp32_layers
    assert targets["jetson-agx-orin-int8-dla"].dla_core == 0 and targets["jetson-agx-orin-int8-dla"].gpu_fallback
    assert targets["jetson-orin-nx-fp16"].precision == "fp16"


def test_every_device_profile_names_a_shipped_target_within_its_opset():
    from edge_gmm.devices.profiles import list_profiles, support_problem

    targets = {t.name: t for t in list_targets()}
    for prof in list_profiles():
        if support_problem(prof):
            continue  # an unsupported board names no target export accepts
        assert prof.default_target in targets, prof.name
        if prof.tensorrt:
            assert targets[prof.default_target].tensorrt_version.split(".")[0] == prof.tensorrt.split(".")[0], prof.name
        if prof.max_opset:
            assert targets[prof.default_target].max_opset <= prof.max_opset, prof.name


def test_opset_ceiling_and_layernorm_follow_the_tensorrt_version():
    targets = {t.name: t for t in list_targets()}
    for t in targets.values():
        if t.tensorrt_version.startswith("8."):
            assert t.opset <= t.max_opset <= 17, t.name  # TensorRT 8.5/8.6 parse opset <= 17
        if t.tensorrt_version == "8.5":
            assert "ln_fp32/" in t.fp32_layers, t.name  # the decomposed LayerNorm is kept FP32


def test_tensorrt_below_85_is_refused_and_old_targets_keep_the_layernorm_fp32(tmp_path):
    with pytest.raises(ConfigError, match="TensorRT 8.2 is not supported"):
        load_target("jetson-nano-fp16")
    mine = tmp_path / "mine.toml"
    mine.write_text('name = "mine"\nruntime = "tensorrt"\ntensorrt_version = "8.5"\nprecision = "fp16"\nopset = 17\nmax_opset = 17\n')
    assert load_target(mine).fp32_layers == ["logmel", "ln_fp32/"]  # added even when the user's TOML forgets it


def test_by_name_or_path():
    assert load_target("cpu-onnx-int8") == load_target(TARGETS_DIR / "cpu-onnx-int8.toml")


def test_unknown_name_lists_the_names_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_target("jetson-orin-nano-int9")
    assert "did you mean 'jetson-orin-nano-int8'" in str(e.value) and "cpu-onnx-fp32" in str(e.value)


def test_bad_target_files_name_the_problem(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\nprecision = "int4"\n')
    with pytest.raises(ConfigError, match="precision"):
        load_target(bad)
    bad.write_text('name = "mine"\nopset = 25\n')
    with pytest.raises(ConfigError, match="opset 25 outside"):
        load_target(bad)
    bad.write_text('name = "mine"\nruntime = "tensorrt"\n')
    with pytest.raises(ConfigError, match="tensorrt_version"):
        load_target(bad)
