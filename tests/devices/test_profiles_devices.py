"""Device profiles: the shipped TOMLs load strictly, names resolve, and the Nano never builds INT8."""

import json
from pathlib import Path

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
        prof = profiles.load_profile(name, allow_unsupported=True)
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
    nano = profiles.load_profile("jetson-nano", allow_unsupported=True)
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


JETPACK_MATRIX = {  # profile -> (JetPack, TensorRT, Python, max opset)
    "jetson-xavier-nx": ("5.1.3", "8.5", "3.8", 17), "jetson-agx-xavier": ("5.1.3", "8.5", "3.8", 17),
    "jetson-orin-nx-jp5": ("5.1.3", "8.5", "3.8", 17), "jetson-agx-orin-jp5": ("5.1.3", "8.5", "3.8", 17),
    "jetson-orin-jp6.0": ("6.0", "8.6", "3.10", 17), "jetson-orin-nano": ("6.2", "10.3", "3.10", 20),
    "jetson-agx-thor": ("7.0", "10.13", "3.12", 24), "jetson-orin-jp7.2": ("7.2", "10.16", "3.12", 24),
}


def test_the_jetpack_matrix_has_each_jetpack_with_its_tensorrt_python_and_opset():
    for name, facts in JETPACK_MATRIX.items():
        p = profiles.load_profile(name)
        assert (p.jetpack, p.tensorrt, p.python, p.max_opset) == facts, name
        assert not profiles.support_problem(p) and p.memory_gb > 0


def test_jetpack4_nano_is_refused_with_the_reason_but_still_listed():
    with pytest.raises(ConfigError, match="not supported: its Python 3.6 .* TensorRT 8.2"):
        profiles.load_profile("jetson-nano")  # what deploy and engine build call
    nano = profiles.load_profile("jetson-nano", allow_unsupported=True)
    assert "NOT SUPPORTED" in nano.description
    row = next(r for r in profiles.matrix_rows() if r["name"] == "jetson-nano")
    assert row["supported"] == "no" and row["target"] == "-"


def test_user_profile_with_an_old_python_is_refused(tmp_path):
    f = tmp_path / "old.toml"
    f.write_text('name = "old"\npython = "3.7"\n')
    with pytest.raises(ConfigError, match="Python 3.7 is older than 3.8"):
        profiles.load_profile(f)


def test_deploy_md_matrix_is_generated_from_the_profiles():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    assert profiles.update_matrix(doc) == doc, "run `edge-gmm devices list --update-doc docs/deploy.md`"


def test_devices_list_shows_the_matrix(cli):
    code, out, _ = cli("devices", "list")
    assert code == 0 and "jetpack" in out and "python" in out and "max_opset" in out
    code, out, _ = cli("devices", "list", "--markdown")
    assert code == 0 and out.strip() == profiles.matrix_markdown()
    code, out, _ = cli("devices", "show", "jetson-nano")
    assert code == 0 and "NOT SUPPORTED" in out
