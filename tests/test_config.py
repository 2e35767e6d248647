import pytest

from edge_gmm.config import FusionConfig, SensorSpec, WindowSpec, load_config
from edge_gmm.errors import ConfigError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_round_trip(tmp_path):
    p = write(tmp_path, "fusion.yaml", "dataset: d\nwindow:\n  length_s: 2\n  hop_s: 1\ntrain:\n  epochs: 3\n")
    c = load_config(p, FusionConfig)
    assert c.window.length_s == 2.0 and c.window.hop_s == 1.0
    assert c.train.epochs == 3
    assert c.model.preset == "teacher-base"  # default kept


def test_toml_loads(tmp_path):
    p = write(tmp_path, "w.toml", "length_s = 1.5\nhop_s = 0.25\n")
    assert load_config(p, WindowSpec).hop_s == 0.25


def test_unknown_key_names_key_file_and_suggests(tmp_path):
    p = write(tmp_path, "fusion.yaml", "window:\n  lenght_s: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, FusionConfig)
    msg = str(e.value)
    assert "fusion.yaml" in msg and "window.lenght_s" in msg and "length_s" in msg


def test_wrong_type_names_expected_type(tmp_path):
    p = write(tmp_path, "fusion.yaml", "train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"train.epochs.*expects int"):
        load_config(p, FusionConfig)


def test_bool_is_not_a_number(tmp_path):
    p = write(tmp_path, "fusion.yaml", "train:\n  lr: true\n")
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(p, FusionConfig)


def test_bad_literal_and_missing_required(tmp_path):
    p = write(tmp_path, "s.yaml", "name: imu\nkind: gyro\nrate: 100\n")
    with pytest.raises(ConfigError, match="kind"):
        load_config(p, SensorSpec)
    p = write(tmp_path, "s2.yaml", "name: imu\nkind: imu\n")
    with pytest.raises(ConfigError, match="missing required key 'rate'"):
        load_config(p, SensorSpec)


def test_unparsable_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml", FusionConfig)
    p = write(tmp_path, "bad.yaml", "window: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(p, FusionConfig)


def test_window_samples_follow_rates():
    w = WindowSpec(length_s=1.0, hop_s=0.5)
    assert w.samples(SensorSpec("imu", "imu", 200, channels=6)) == 200
    assert w.samples(SensorSpec("mic", "audio", 16000)) == 16000
    assert w.samples(SensorSpec("cam", "camera", 5, height=96, width=96)) == 1
    assert SensorSpec("cam", "camera", 5, height=8, width=8).sample_shape == (8, 8, 3)
