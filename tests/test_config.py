import pytest

from edge_gmm.config import FusionConfig, SensorSpec, WindowSpec, load_config, read_mapping
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


# ---------------------------------------------------------------- bad input is refused, naming what is wrong


@pytest.mark.parametrize("name, text, line", [
    ("fusion.yaml", "train:\n  epochs: 3\n  lr: 0.01\n  epochs: 30\n", "line 4 (first at line 2)"),
    ("fusion.yaml", "window: {length_s: 1, length_s: 2}\n", "duplicate key 'length_s'"),
    ("fusion.json", '{"train": {"epochs": 3, "epochs": 30}}', "duplicate key 'epochs'"),
])
def test_a_duplicate_key_is_refused_not_silently_overridden(tmp_path, name, text, line):
    p = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match="duplicate key") as e:
        load_config(p, FusionConfig)
    assert name in str(e.value) and line in str(e.value)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    p = write(tmp_path, "w.yaml", "length_s: 2\n<<: {hop_s: 1, length_s: 4}\n")
    assert read_mapping(p) == {"length_s": 2, "hop_s": 1}


@pytest.mark.parametrize("text, key", [
    ("train:\n  lr: .nan\n", "train.lr"),
    ("window:\n  length_s: .inf\n", "window.length_s"),
    ("train:\n  time_budget_s: -.inf\n", "train.time_budget_s"),
])
def test_non_finite_numbers_are_refused(tmp_path, text, key):
    with pytest.raises(ConfigError, match=f"'{key}' must be a finite number"):
        load_config(write(tmp_path, "fusion.yaml", text), FusionConfig)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    p = tmp_path / "fusion.yaml"
    p.write_bytes("dataset: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"fusion.yaml: not UTF-8 text \(byte 0xe9 at offset 12\)"):
        load_config(p, FusionConfig)


@pytest.mark.parametrize("key, value", [
    ("epochs", -3), ("student_epochs", -1), ("batch_size", -8), ("lr", 0), ("lr", -0.1), ("weight_decay", -1),
    ("warmup_frac", 1.0), ("max_epochs", 0), ("patience", -2), ("distill_temperature", 0), ("distill_alpha", 1.5),
    ("label_smoothing", 1), ("threads", -1), ("time_budget_s", -5),
])
def test_training_values_that_train_nothing_are_refused_naming_the_key(tmp_path, key, value):
    p = write(tmp_path, "fusion.yaml", f"train:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"fusion.yaml: train\.{key} must be .*got {value}"):
        load_config(p, FusionConfig)


def test_zero_still_means_derived_from_the_dataset(tmp_path):
    p = write(tmp_path, "fusion.yaml", "train:\n  epochs: 0\n  student_epochs: 0\n  batch_size: 0\n  patience: 0\n")
    assert load_config(p, FusionConfig).train.batch_size == 0
    with pytest.raises(ConfigError, match=r"model\.dropout must be in \[0, 1\)"):
        load_config(write(tmp_path, "m.yaml", "model:\n  dropout: 1.0\n"), FusionConfig)


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 1e-6, 0.0, -5.0, 1e9])
def test_absurd_or_non_finite_sensor_rates_are_refused(rate):
    with pytest.raises(ConfigError, match="rate must be within"):
        SensorSpec("imu", "imu", rate, 3)


def test_sensor_rates_of_real_sensors_are_accepted():
    assert SensorSpec("gauge", "timeseries", 1 / 600).rate == pytest.approx(1 / 600)
    assert SensorSpec("ultrasound", "audio", 1e6).rate == 1e6
    with pytest.raises(ConfigError, match="timeout_s must be >= 0 and finite"):
        SensorSpec("imu", "imu", 100.0, 3, timeout_s=float("nan"))
