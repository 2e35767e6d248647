"""Training length follows the data: a step budget with a floor, early stopping, a time budget."""

import time

import numpy as np
import pytest
import torch

from edge_gmm.config import ModelSpec, TrainSpec
from edge_gmm.errors import ConfigError
from edge_gmm.model import build_model
from edge_gmm.train.budget import parse_duration, plan
from edge_gmm.train.features import featurize
from edge_gmm.train.loop import fit

from tests.train.test_train_loop import SENSORS, TASKS, WINDOW, toy_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_small_set_gets_the_step_floor_and_a_large_one_its_epochs():
    spec = TrainSpec()
    small, large = plan(40, spec), plan(2000, spec)
    assert small.batch_size == 8 and small.steps_per_epoch == 5
    assert small.epochs > 10 and small.steps >= spec.min_steps  # a fixed 10 epochs would be 50 steps
    assert large.batch_size == 64 and large.steps_per_epoch == 32
    assert large.epochs == max(spec.budget_epochs, -(-spec.min_steps // 32))
    assert plan(400, spec).steps >= spec.min_steps
    assert small.lr < large.lr == spec.lr  # smaller batches, smaller steps
    assert plan(40, spec, epochs=3).epochs == 3 and not plan(40, spec, epochs=3).derived
    assert plan(10, TrainSpec(max_epochs=7)).epochs == 7


def test_durations_parse_and_bad_ones_are_config_errors():
    assert parse_duration("90s") == 90 and parse_duration("5m") == 300 and parse_duration("1.5h") == 5400
    assert parse_duration("42") == 42
    for bad in ("", "5 minutes", "-3m", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def _model(train_w, val_w, seed=0):
    torch.manual_seed(seed)
    model = build_model("student-tiny", SENSORS, WINDOW, TASKS, ModelSpec(dropout=0.0))
    tf, vf = featurize(model, train_w), featurize(model, val_w)
    model.set_norm_stats(tf.feats, tf.mask)
    return model, tf, vf


def test_a_40_example_set_trains_past_10_epochs_and_stops_on_its_own():
    model, tf, vf = _model(toy_windows(40, 0), toy_windows(48, 1))
    # the patience rule alone (the toy task reaches 100 % early), on a 300-step floor to stay quick
    spec = TrainSpec(seed=1, perfect_epochs=0, min_steps=300)
    planned = plan(len(tf), spec)
    res = fit(model, tf, vf, spec, modality_dropout_p=0.2, log=lambda s: None)
    assert 10 < len(res.history) < planned.epochs, (len(res.history), planned)
    assert res.best_score >= 0.9, res.history  # it learned the toy task (chance 1/3)


def test_too_small_a_validation_set_trains_the_whole_budget_and_keeps_the_last_epoch():
    model, tf, vf = _model(toy_windows(40, 0), toy_windows(6, 1))
    spec = TrainSpec(seed=1, min_steps=60)
    lines = []
    res = fit(model, tf, vf, spec, modality_dropout_p=0.2, log=lines.append)
    assert len(res.history) == plan(len(tf), spec).epochs
    assert res.best_epoch == len(res.history) - 1
    assert any("too few to pick an epoch" in line for line in lines)


def test_a_time_budget_cuts_the_plan_after_the_first_epoch():
    model, tf, vf = _model(toy_windows(40, 0), toy_windows(48, 1))
    lines = []
    res = fit(model, tf, vf, TrainSpec(seed=1), modality_dropout_p=0.2, log=lines.append, deadline=time.perf_counter())
    assert len(res.history) == 1
    assert any("time budget" in line for line in lines)


def test_progress_lines_name_step_epoch_and_eta(monkeypatch):
    model, tf, vf = _model(toy_windows(40, 0), toy_windows(6, 1))
    lines = []
    monkeypatch.setattr("edge_gmm.train.loop.PROGRESS_EVERY_S", 0.0)  # a line per step: the throttle is time, not behaviour
    fit(model, tf, vf, TrainSpec(seed=1), 2, modality_dropout_p=0.2, log=lines.append)
    ticks = [line for line in lines if " step " in line]
    assert ticks and "ETA" in ticks[-1] and "epoch 2/2" in ticks[-1] and "step 10/10" in ticks[-1]


def test_validation_at_100_percent_for_a_few_epochs_ends_training():
    model, tf, vf = _model(toy_windows(96, 0), toy_windows(48, 1))
    spec = TrainSpec(seed=1, perfect_epochs=2)
    res = fit(model, tf, vf, spec, modality_dropout_p=0.0, log=lambda s: None)
    accs = [h["val_acc"] for h in res.history]
    assert accs[-2:] == [1.0, 1.0] and len(accs) < plan(len(tf), spec).epochs, accs
