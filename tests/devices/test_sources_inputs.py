"""Bad sources files and URIs: each is a ConfigError naming the file, the key or the option (exit 2 from
`edge-gmm run`, one message, no traceback), never a silently ignored setting."""

import pytest

from edge_gmm.config import SensorSpec
from edge_gmm.devices.sources import parse_uri
from edge_gmm.devices.sources_file import load_sources
from edge_gmm.errors import ConfigError

SENSORS = [SensorSpec("imu", "imu", 8.0, 4)]


@pytest.fixture
def bundle(tmp_path):
    from tests.runtime.test_runtime_bundle import manifest_stub, tiny_onnx

    from edge_gmm.runtime.bundle import write_bundle

    return write_bundle(tmp_path / "bundle", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "src.onnx")})


def run_with(cli, bundle, sources):
    code, _, err = cli("run", "--bundle", bundle, "--sources", sources, "--mqtt", "none", "--max-windows", "1")
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("edge-gmm run: error: ") and len(err.strip().splitlines()) <= 2, err  # message + hint
    return err


def test_a_sources_file_that_is_not_utf8_exits_2(cli, bundle, tmp_path):
    p = tmp_path / "sources.yaml"
    p.write_bytes(b"imu: replay://caf\xe9\n")
    assert "sources.yaml: not UTF-8 text" in run_with(cli, bundle, p)


def test_a_duplicate_modality_in_a_sources_file_exits_2(cli, bundle, tmp_path):
    p = tmp_path / "sources.yaml"
    p.write_text("imu: serial:///dev/ttyACM0\nimu: serial:///dev/ttyACM1\n")
    assert "duplicate key 'imu' at line 2 (first at line 1)" in run_with(cli, bundle, p)


def test_a_nan_timeout_exits_2(cli, bundle, tmp_path):
    p = tmp_path / "sources.yaml"
    p.write_text("imu:\n  uri: serial:///dev/ttyACM0\n  timeout_s: .nan\n")
    assert "'imu.timeout_s' must be a finite number" in run_with(cli, bundle, p)


def test_a_misspelled_uri_option_exits_2_with_the_known_ones(cli, bundle, tmp_path):
    err = run_with(cli, bundle, f"replay://{tmp_path}?sesion=x")
    assert "unknown option 'sesion' (did you mean 'session'?)" in err and "modalities, session, split, loop" in err


@pytest.mark.parametrize("uri, message", [
    ("replay://d?loop=1&sesion=a", "'sesion' (did you mean 'session'?)"),
    ("serial:///dev/ttyACM0?bud=921600", "'bud' (did you mean 'baud'?)"),
    ("/dev/ttyACM0?format=ei-forwarder&frequncy=100", "'frequncy' (did you mean 'frequency'?)"),
    ("synth://machine-health?camra_size=16", "'camra_size' (did you mean 'camera_size'?)"),
    ("audio://default?devce=hw:1", "'devce' (did you mean 'device'?)"),
    ("replay://d?loop=1&loop=0", "option 'loop' given twice"),
])
def test_uri_options_are_checked_per_scheme(uri, message):
    with pytest.raises(ConfigError, match="unknown option|given twice") as e:
        parse_uri(uri)
    assert message in str(e.value)


def test_known_options_still_parse():
    assert parse_uri("replay://d?modalities=imu&session=a,b&split=test&loop=1").options["split"] == "test"
    assert parse_uri("synth://machine-health?label=normal&seed=2&camera_size=16").options["camera_size"] == "16"
    assert parse_uri("/dev/ttyACM0?format=ei-forwarder&frequency=100&name=imu&baud=115200").scheme == "serial"


def test_a_negative_timeout_in_a_sources_file_names_the_modality(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("imu: {uri: 'serial:///dev/ttyACM0', timeout_s: -1}\n")
    with pytest.raises(ConfigError, match=r"imu\.timeout_s must be >= 0"):
        load_sources(str(p), SENSORS)
