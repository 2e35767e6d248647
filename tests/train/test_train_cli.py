"""`edge-gmm train` -> `edge-gmm evaluate` on a real (tiny) synthetic dataset, the run directory round trip,
and the same training under torchrun with 2 gloo processes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from edge_gmm.config import FusionConfig, ModelSpec
from edge_gmm.data.synth import get_scenario, synthesize
from edge_gmm.model import build_model
from edge_gmm.train.checkpoint import load_run, save_weights, write_run_json

FAST = ["--epochs", "2", "--student-epochs", "2", "--preset", "student-small", "--student", "student-tiny", "--threads", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "mh"
    synthesize("machine-health", path, seed=1, sessions_per_class=3, session_seconds=4.0, camera_size=16)
    return path


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    from edge_gmm.cli.main import main

    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--dataset", str(dataset), "--out", str(run), *FAST]) == 0
    return run


def test_train_without_config_writes_a_complete_run(trained, dataset):
    for name in ("run.json", "teacher.safetensors", "student.safetensors", "metrics.json", "train.log", "plots/curves.png"):
        assert (trained / name).is_file(), name
    doc = json.loads((trained / "run.json").read_text())
    assert doc["presets"] == {"teacher": "student-small", "student": "student-tiny"}
    assert [s["name"] for s in doc["sensors"]] == ["imu", "audio", "camera", "env"]  # all, from the manifest
    assert doc["window"]["hop_s"] == 0.5
    metrics = json.loads((trained / "metrics.json").read_text())
    assert len(metrics["teacher"]["history"]) == 2 and len(metrics["student"]["history"]) == 2


def test_evaluate_reports_teacher_and_student_side_by_side(trained, cli):
    code, out, err = cli("evaluate", trained, "--json", "--no-latency")
    assert code == 0, err
    res = json.loads(out)
    for role in ("teacher", "student"):
        e = res[role]
        assert 0 <= e["accuracy"] <= 1 and 0 <= e["macro_f1"] <= 1
        assert set(e["ablation"]["alone"]) == set(e["ablation"]["without"]) == {"imu", "audio", "camera", "env"}
        assert e["flops"]["total"] > e["flops"]["frontend"] > 0
        assert sum(map(sum, e["tasks"]["state"]["confusion"])) == res["windows"]
    report = (trained / "report.md").read_text()
    assert "Modality ablation" in report and "teacher" in report and "student" in report
    for png in ("plots/confusion_state.png", "plots/curves.png"):
        assert (trained / png).stat().st_size > 1000
        assert f"]({png})" in report


def test_existing_run_needs_resume_and_resume_of_a_finished_run_is_a_no_op(trained, dataset, cli):
    code, _, err = cli("train", "--dataset", dataset, "--out", trained, *FAST)
    assert code == 2 and "--resume" in err and "Traceback" not in err
    before = (trained / "student.safetensors").read_bytes()
    code, _, err = cli("train", "--dataset", dataset, "--out", trained, "--resume", *FAST)
    assert code == 0, err
    assert (trained / "student.safetensors").read_bytes() == before


def test_config_errors_name_the_key(tmp_path, dataset, cli):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"dataset: {dataset}\ntrain:\n  epoch: 3\n")
    code, _, err = cli("train", "--config", cfg, "--out", tmp_path / "r")
    assert code == 2 and "train.epoch" in err and "epochs" in err
    code, _, err = cli("train", "--dataset", tmp_path / "nope", "--out", tmp_path / "r")
    assert code == 2 and "nope" in err


def test_run_directory_round_trip_gives_identical_outputs(tmp_path):
    sc = get_scenario("machine-health", camera_size=16)
    cfg = FusionConfig(dataset="x", model=ModelSpec(preset="student-small", student="student-tiny"))
    torch.manual_seed(0)
    models = {}
    for role, preset in (("teacher", "student-small"), ("student", "student-tiny")):
        m = build_model(preset, sc.sensors(), sc.window(), sc.tasks(), cfg.model).eval()
        for tok in m.tokenizers.values():
            tok.mean.normal_()
        save_weights(m, tmp_path / f"{role}.safetensors")
        models[role] = m
    write_run_json(tmp_path, cfg, sc.sensors(), sc.window(), sc.tasks(), "x")
    run = load_run(tmp_path)
    assert run.modalities == ["imu", "audio", "camera", "env"] and run.dataset == "x"
    for role, m in models.items():
        inputs, mask = m.example_inputs(2)
        with torch.no_grad():
            a, b = m(inputs, mask), run.model(role)(inputs, mask)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_gloo_processes(dataset, tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "edge_gmm.cli.main", "train", "--dataset", str(dataset), "--out", str(run),
           "--epochs", "1", "--student-epochs", "1", "--preset", "student-tiny", "--student", "student-tiny", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es)" in (run / "train.log").read_text()
    assert load_run(run).student is not None
