"""`export` and `train-and-export` refuse, before any work, to replace a bundle without --force, and refuse
training values that would train nothing: exit 2, one message naming the path or the key, no traceback."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture
def bundle(tmp_path):
    from tests.runtime.test_runtime_bundle import manifest_stub, tiny_onnx

    from edge_gmm.runtime.bundle import write_bundle

    return write_bundle(tmp_path / "bundle", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "src.onnx")})


@pytest.fixture
def dataset(tmp_path):
    from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
    from edge_gmm.data.format import DatasetWriter, Session, Stream

    t = np.arange(100) / 50.0
    with DatasetWriter(tmp_path / "ds", name="tiny", sensors=[SensorSpec("acc", "imu", 50.0, 3)],
                       tasks=[TaskSpec("state", labels=["a", "b"])], window=WindowSpec(1.0, 0.5)) as w:
        for i, label in enumerate("ab"):
            w.add(Session(f"s{i}", {"acc": Stream(t, np.zeros((100, 3), np.float32))}, {"state": label}), "train")
    return tmp_path / "ds"


def refused(result, *needles):
    code, _, err = result
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2, err  # the message and its hint
    assert all(n in err for n in needles), err
    return err


def test_export_refuses_to_replace_a_bundle_without_force(cli, bundle, tmp_path):
    before = (bundle / "manifest.json").read_bytes()
    refused(cli("export", tmp_path / "no-run", "--target", "cpu-onnx-fp32", "--out", bundle),
            "a bundle is already there", "--force")
    # with --force the bundle check passes: the export goes on and fails on the missing run, replacing nothing
    code, _, err = cli("export", tmp_path / "no-run", "--target", "cpu-onnx-fp32", "--out", bundle, "--force")
    assert code == 2 and "no-run" in err and "already there" not in err
    assert (bundle / "manifest.json").read_bytes() == before


def test_export_refuses_a_tar_it_would_overwrite_and_a_folder_that_is_no_bundle(cli, tmp_path):
    (tmp_path / "b.tar").write_bytes(b"old")
    refused(cli("export", tmp_path / "run", "--target", "cpu-onnx-fp32", "--out", tmp_path / "b", "--tar"), "b.tar: already exists")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    refused(cli("export", tmp_path / "run", "--target", "cpu-onnx-fp32", "--out", tmp_path / "notes", "--force"),
            "exists and is not a bundle")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_train_and_export_refuses_an_existing_bundle_before_training(cli, bundle, dataset, tmp_path):
    (tmp_path / "fusion.yaml").write_text(f"dataset: {dataset}\n")
    refused(cli("train-and-export", "--config", tmp_path / "fusion.yaml", "--target", "cpu-onnx-fp32", "--out", bundle),
            "a bundle is already there")
    assert not (tmp_path / "bundle.run").exists()


@pytest.mark.parametrize("train", ["epochs: -3", "lr: 0", "batch_size: -4", "student_epochs: -1"])
def test_train_and_export_refuses_a_config_that_trains_nothing(cli, dataset, tmp_path, train):
    key, value = train.split(": ")
    (tmp_path / "fusion.yaml").write_text(f"dataset: {dataset}\ntrain:\n  {train}\n")
    refused(cli("train-and-export", "--config", tmp_path / "fusion.yaml", "--target", "cpu-onnx-fp32", "--out", tmp_path / "b"),
            "fusion.yaml", f"train.{key} must be", f"got {value}")
    assert not (tmp_path / "b.run").exists()


@pytest.mark.parametrize("flag, key", [("--epochs", "epochs"), ("--student-epochs", "student_epochs"), ("--threads", "threads")])
def test_train_refuses_negative_overrides_naming_the_key(cli, dataset, tmp_path, flag, key):
    refused(cli("train", "--dataset", dataset, "--out", tmp_path / "run", flag, "-3"), f"train.{key} must be >= 0, got -3")
    assert not (tmp_path / "run").exists()


def test_zero_epochs_and_batch_still_mean_derived(dataset, tmp_path):
    from edge_gmm.train.run import resolve_config

    (tmp_path / "fusion.yaml").write_text(json.dumps({"dataset": str(dataset), "train": {"epochs": 0, "batch_size": 0}}))
    cfg, _ = resolve_config(config=str(tmp_path / "fusion.yaml"), **{"train.student_epochs": 0})
    assert (cfg.train.epochs, cfg.train.student_epochs, cfg.train.batch_size) == (0, 0, 0)
