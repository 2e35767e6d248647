"""`edge-gmm tune`: trials within a budget, the best by validation written as a config `train` reads."""

import json

import pytest

from edge_gmm.config import FusionConfig, load_config
from edge_gmm.data.synth import synthesize
from edge_gmm.errors import ConfigError
from edge_gmm.train.tune import tune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"model.preset": "student-tiny", "model.student": "student-tiny", "train.epochs": 1, "train.student_epochs": 1,
        "train.threads": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "mh"
    synthesize("machine-health", path, seed=1, sessions_per_class=3, session_seconds=4.0, camera_size=16)
    return path


def test_tune_writes_the_best_trial_as_a_config(dataset, tmp_path):
    trials = [dict(TINY), {**TINY, "train.lr": 4e-3}]
    res = tune(str(dataset), None, tmp_path / "tune", budget_s=120, trials=trials, log=lambda m: None)
    assert len(res.trials) == 2 and res.best in res.trials
    assert res.best.val_acc == max(t.val_acc for t in res.trials)
    cfg = load_config(res.config_path, FusionConfig)
    assert cfg.train.lr == res.best.config["train"]["lr"] and cfg.train.time_budget_s == 0
    assert cfg.model.student == "student-tiny" and cfg.dataset == str(dataset.resolve())
    rows = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert [r["trial"].count("train.lr=0.004") for r in rows] == [0, 1]


def test_a_latency_cap_nobody_meets_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(ConfigError, match="no trial met"):
        tune(str(dataset), None, tmp_path / "tune", budget_s=60, max_latency_ms=1e-6, trials=[dict(TINY)], log=lambda m: None)


def test_a_budget_too_small_for_the_trials_is_refused_before_training(dataset, tmp_path, cli):
    code, _, err = cli("tune", "--dataset", dataset, "--budget", "10s", "--out", tmp_path / "t")
    assert code == 2 and "per trial" in err
    code, _, err = cli("tune", "--dataset", dataset, "--budget", "soon", "--out", tmp_path / "t")
    assert code == 2 and "duration" in err
