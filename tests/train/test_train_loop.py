"""The training loop learns, distills, is deterministic for a seed, and resumes exactly."""

import dataclasses
import numpy as np
import pytest
import torch

from edge_gmm.config import ModelSpec, SensorSpec, TaskSpec, TrainSpec, WindowSpec
from edge_gmm.data.windowing import Windows
from edge_gmm.model import build_model
from edge_gmm.train.features import featurize
from edge_gmm.train.loop import Distill, accuracy, fit, predict

SENSORS = [SensorSpec("imu", "imu", 50.0, 3), SensorSpec("audio", "audio", 2000.0)]
WINDOW = WindowSpec()
TASKS = [TaskSpec("state", labels=["idle", "slow", "fast"])]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_windows(n: int, seed: int) -> Windows:
    """Class c: an IMU sine at 3(c+1) Hz and an audio tone at 200(c+1) Hz, random phase, noise, gain."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t_imu, t_aud = np.arange(50) / 50.0, np.arange(2000) / 2000.0
    ph = rng.uniform(0, 2 * np.pi, (n, 1))
    gain = rng.uniform(0.5, 1.5, (n, 1))
    imu = gain[:, None] * np.sin(2 * np.pi * 3 * (y[:, None, None] + 1) * t_imu + ph[:, None]) + 0.3 * rng.standard_normal((n, 3, 50))
    aud = 0.2 * gain * np.sin(2 * np.pi * 200 * (y[:, None] + 1) * t_aud + ph) + 0.05 * rng.standard_normal((n, 2000))
    mask = np.ones((n, 2), np.float32)
    mask[rng.random(n) < 0.1, 0] = 0  # some windows lost their IMU
    return Windows({"imu": imu.astype(np.float32), "audio": aud.astype(np.float32)}, mask, {"state": y.astype(np.int64)},
                   np.arange(n, dtype=np.float64), ["s"] * n, ["imu", "audio"])


SPEC = TrainSpec(epochs=3, batch_size=32, lr=3e-3, patience=5, seed=3)


def _prepared(preset: str, train_w, val_w):
    torch.manual_seed(SPEC.seed)
    model = build_model(preset, SENSORS, WINDOW, TASKS, ModelSpec(dropout=0.0))
    tf, vf = featurize(model, train_w), featurize(model, val_w)
    model.set_norm_stats(tf.feats, tf.mask)
    return model, tf, vf


@pytest.fixture(scope="module")
def toy():
    return toy_windows(192, 0), toy_windows(96, 1)


def test_teacher_learns_and_student_distills_well_above_chance(toy):
    train_w, val_w = toy
    teacher, tf, vf = _prepared("student-small", train_w, val_w)
    # the teacher also exercises the per-modality auxiliary heads
    res = fit(teacher, tf, vf, dataclasses.replace(SPEC, aux_weight=0.3), 3, modality_dropout_p=0.2, log=lambda s: None)
    assert res.best_score >= 0.9, res.history
    assert accuracy(teacher, vf)["state"] == pytest.approx(res.best_score)  # best epoch's weights kept
    targets = predict(teacher, tf)
    student, sf, svf = _prepared("student-tiny", train_w, val_w)
    sres = fit(student, sf, svf, SPEC, 3, modality_dropout_p=0.2, distill=Distill({"state": targets["logits_state"]},
               targets["embedding"]), log=lambda s: None)
    assert sres.best_score >= 0.8, sres.history  # chance is 1/3


def test_training_is_deterministic_for_a_seed(toy):
    train_w, val_w = toy[0].select(np.arange(96)), toy[1].select(np.arange(32))
    states = []
    for _ in range(2):
        model, tf, vf = _prepared("student-tiny", train_w, val_w)
        fit(model, tf, vf, SPEC, 2, modality_dropout_p=0.3, log=lambda s: None)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


class _Interrupt:
    """A progress bar that stops training after `after` epochs, like Ctrl-C would."""

    def __init__(self, after):
        self.after, self.n = after, 0

    def __call__(self, **kw):
        return self

    def update(self, n=1):
        self.n += n
        if self.n == self.after:
            raise KeyboardInterrupt

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def test_resume_after_an_interrupt_matches_an_uninterrupted_run(toy, tmp_path):
    train_w, val_w = toy[0].select(np.arange(96)), toy[1].select(np.arange(32))
    spec = TrainSpec(epochs=3, batch_size=32, seed=5, patience=10)
    model, tf, vf = _prepared("student-tiny", train_w, val_w)
    ref = fit(model, tf, vf, spec, 3, modality_dropout_p=0.3, log=lambda s: None)
    want = model.state_dict()

    state = tmp_path / "state.pt"
    model, tf, vf = _prepared("student-tiny", train_w, val_w)
    with pytest.raises(KeyboardInterrupt):
        fit(model, tf, vf, spec, 3, modality_dropout_p=0.3, state_path=state, progress=_Interrupt(2), log=lambda s: None)
    model, tf, vf = _prepared("student-tiny", train_w, val_w)  # a fresh process would rebuild the model
    got = fit(model, tf, vf, spec, 3, modality_dropout_p=0.3, state_path=state, resume=True, log=lambda s: None)
    assert [h["train_loss"] for h in got.history] == [h["train_loss"] for h in ref.history]
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k
