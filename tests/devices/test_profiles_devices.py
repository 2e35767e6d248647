"""Device profiles: the shipped TOMLs load strictly, names resolve, and the Nano never builds INT8."""

import json

import pytest

from edge_gmm.config import DeviceProfile
from edge_gmm.devices import profiles
from edge_gmm.errors import ConfigError

REQUIRED = {
    "jetson-orin-nano", "jetson-orin-nano-4gb", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx",
    "jetson-nano", "x86-cuda", "cpu-x86_64", "cpu-arm64",
}


def test_every_shipped_profile_loads_and_is_named_like_its_file():
    found = {p.name for p in profiles.list_profiles()}
    assert REQUIRED <= found
    for name in found:
        prof = profiles.load_profile(name)
        assert profiles.profile_file(name).stem == prof.name
        assert prof.default_target


def test_jetson_facts_that_deploy_and_engine_build_rely_on():
    nano8 = profiles.load_profile("jetson-orin-nano")
    assert nano8.dla_cores == 0 and nano8.compute_capability == "8.7" and profiles.has_tensorrt(nano8)
    assert profiles.load_profile("jetson-orin-nano-4gb").memory_gb < nano8.memory_gb
    assert profiles.load_profile("jetson-agx-orin").dla_cores == 2
    assert profiles.load_profile("jetson-xavier-nx").max_opset == 17  # TensorRT 8.5 parser
    assert not profiles.has_tensorrt(profiles.load_profile("cpu-arm64"))


def test_original_nano_downgrades_int8_to_fp16_with_a_warning():
    nano = profiles.load_profile("jetson-nano")
    assert profiles.pick_precision(nano, "int8")[0] == "fp16"
    assert "INT8" in profiles.pick_precision(nano, "int8")[1]
    assert profiles.pick_precision(nano, "fp16") == ("fp16", None)
    assert profiles.pick_precision(profiles.load_profile("jetson-orin-nano"), "int8") == ("int8", None)


def test_load_by_path_and_user_profile_folder(tmp_path, monkeypatch):
    f = tmp_path / "my-board.toml"
    f.write_text('name = "my-board"\narch = "x86_64"\n')
    assert profiles.load_profile(f).arch == "x86_64"
    monkeypatch.setenv("EDGE_GMM_PROFILES", str(tmp_path))
    assert profiles.load_profile("my-board").name == "my-board"
    assert "my-board" in {p.name for p in profiles.list_profiles()}


def test_aliases_name_the_same_board():
    assert profiles.load_profile("jetson-orin-nano-8gb") == profiles.load_profile("jetson-orin-nano")
    assert profiles.profile_file("jetson-orin-nano-8gb").name == "jetson-orin-nano.toml"


def test_unknown_name_and_bad_key_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'jetson-orin-nano'"):
        profiles.load_profile("jetson-orin-nan")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndla_core = 1\n')
    with pytest.raises(ConfigError, match="dla_core"):
        profiles.load_profile(bad)
    with pytest.raises(ConfigError, match="no such file"):
        profiles.load_profile(tmp_path / "missing.toml")


def test_devices_cli_list_and_show(cli):
    code, out, _ = cli("devices", "list", "--json")
    assert code == 0 and REQUIRED <= {row["name"] for row in json.loads(out)}
    code, out, _ = cli("devices", "show", "jetson-nano")
    assert code == 0 and "FP16 instead of INT8" in out
    code, out, _ = cli("devices", "show", "jetson-agx-orin", "--json")
    data = json.loads(out)
    assert code == 0 and data["dla_cores"] == 2 and data["builds_tensorrt_engine"] is True
    code, _, err = cli("devices", "show", "no-such-board")
    assert code == 2 and "unknown device profile" in err and "Traceback" not in err
    assert isinstance(profiles.load_profile("cpu-x86_64"), DeviceProfile)
