"""`edge-gmm train-and-export` from a config, the new user's desktop job, on a tiny dataset and model."""

import pytest

pytest.importorskip("torch")

CONFIG = """\
dataset: ds
modalities: [imu, audio]
model:
  preset: student-tiny   # teacher and student both tiny: this checks the wiring, not the accuracy
  student: student-tiny
train:
  epochs: 2
  threads: 1
"""


@pytest.fixture
def config(tmp_path):
    from edge_gmm.data.synth import synthesize

    synthesize("machine-health", tmp_path / "ds", sessions_per_class=3, session_seconds=4.0)
    (tmp_path / "fusion.yaml").write_text(CONFIG)
    return tmp_path / "fusion.yaml"


def test_one_command_trains_exports_and_prints_the_summary(config, cli):
    from edge_gmm.runtime.bundle import Bundle

    out = config.parent / "bundle"
    code, text, err = cli("train-and-export", "--config", config, "--target", "cpu-onnx-int8", "--out", out,
                          "--bench-iters", "20", "--max-accuracy-drop", "100", "--min-agreement", "0")
    assert code == 0, err
    assert (config.parent / "bundle.run" / "student.safetensors").is_file()
    assert Bundle.open(out).verify()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("precision"))
    assert all(col in header for col in ("accuracy %", "agreement %", "size KiB", "median ms", "p99 ms"))
    assert any(line.startswith("fp32") for line in lines) and any(line.startswith("int8") for line in lines)
    assert "TensorRT lint (cpu-onnx-int8): ok" in text


def test_a_bad_target_fails_before_any_training(config, cli):
    code, _, err = cli("train-and-export", "--config", config, "--target", "jetson-nano-int8", "--out", config.parent / "b")
    assert code == 2 and "unknown export target" in err
    assert not (config.parent / "b.run").exists()
