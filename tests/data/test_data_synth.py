"""machine-health: deterministic, real-rig effects present, and the designed confusions hold per modality."""

import numpy as np
import pytest

from edge_gmm.data import synth
from edge_gmm.data.format import Dataset
from edge_gmm.data.windowing import make_windows, window_session
from edge_gmm.errors import ConfigError

SC = synth.get_scenario("machine-health")


def test_deterministic_for_a_seed():
    a = synth.generate_session("machine-health", "imbalance", 4, 3.0)
    b = synth.generate_session("machine-health", "imbalance", 4, 3.0)
    c = synth.generate_session("machine-health", "imbalance", 5, 3.0)
    for m in a.streams:
        assert a.streams[m].t.tobytes() == b.streams[m].t.tobytes() and a.streams[m].x.tobytes() == b.streams[m].x.tobytes()
    assert a.streams["imu"].x.tobytes() != c.streams["imu"].x.tobytes()


def test_rig_effects_offsets_jitter_drops():
    s = synth.generate_session("machine-health", "normal", 1, 10.0)
    imu = s.streams["imu"]
    assert np.all(np.diff(imu.t) >= 0)
    period = np.diff(imu.t)
    assert 0 < period.std() < 0.002  # jittered but sane
    assert len(imu) < 10 * 200  # some samples dropped
    starts = {m: st.t[0] for m, st in s.streams.items()}
    assert len({round(v, 6) for v in starts.values()}) == 4  # each sensor on its own clock offset
    assert s.streams["camera"].x.shape[1:] == (32, 32, 3) and s.streams["audio"].x.ndim == 1


def signature_features(session):
    """One scalar per modality that responds to that modality's fault signature. (W,) arrays."""
    w = window_session(session, SC.sensors(), SC.window(), SC.tasks())
    imu = w.inputs["imu"][:, :2].std(axis=2).mean(axis=1)
    spec = np.abs(np.fft.rfft(w.inputs["audio"], axis=1)) ** 2
    with np.errstate(invalid="ignore"):  # masked windows are zeros; they are filtered out below
        audio = spec[:, 2600:3400].mean(axis=1) / spec[:, 1000:2400].mean(axis=1)
    cam = w.inputs["camera"][:, 0, 7:11, 20:26].mean(axis=(1, 2)) - w.inputs["camera"][:, 0, 16:22, 12:20].mean(axis=(1, 2))
    env = w.inputs["env"][:, 0].mean(axis=1)
    feats = {"imu": imu, "audio": audio, "camera": cam, "env": env}
    return {m: f[w.mask[:, w.modalities.index(m)] > 0] for m, f in feats.items()}


def test_each_modality_sees_exactly_its_two_faults():
    per_class = {}
    for lab in SC.labels:  # pooled over seeds, so a session whose sensor is out still leaves data
        feats = [signature_features(SC.session(lab, seed=seed, duration_s=3.0)) for seed in (3, 4, 5)]
        per_class[lab] = {m: np.concatenate([f[m] for f in feats]) for m in feats[0]}
    for m in ("imu", "audio", "camera", "env"):
        on = [lab for lab, mods in synth.MACHINE_SIGNATURES.items() if m in mods]
        off = [lab for lab in SC.labels if lab not in on]
        assert len(on) == 2, m
        lo_on = min(np.median(per_class[lab][m]) for lab in on)
        hi_off = max(np.median(per_class[lab][m]) for lab in off)
        assert lo_on > hi_off, (m, on, lo_on, hi_off)


def test_fusion_separates_every_pair_of_classes():
    sigs = {lab: frozenset(m) for lab, m in synth.MACHINE_SIGNATURES.items()}
    assert len(set(sigs.values())) == len(sigs)  # all four modalities together: every class distinct
    for dropped in ("imu", "audio", "camera", "env"):  # any three still separate all classes
        assert len({s - {dropped} for s in sigs.values()}) == len(sigs)
    for m in ("imu", "audio", "camera", "env"):  # any one alone: only two groups
        assert len({m in s for s in sigs.values()}) == 2


def test_synthesize_writes_stratified_session_splits(tmp_path):
    ds = synth.synthesize("machine-health", tmp_path / "mh", seed=2, sessions_per_class=3, session_seconds=3.0, camera_size=16)
    assert isinstance(ds, Dataset) and ds.window.hop_s == 0.5 and ds.sensor("camera").height == 16
    for split in ("train", "val", "test"):
        assert sorted(ds.load_session(s).labels["state"] for s in ds.session_ids(split)) == sorted(SC.labels)
    w = make_windows(ds, "train")
    assert len(w) >= 5 * 4 and w.inputs["camera"].shape[1:] == (3, 16, 16)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        synth.generate_session("nope", "normal", 0, 3.0)
    with pytest.raises(ConfigError, match="unknown label 'broken'"):
        synth.generate_session("machine-health", "broken", 0, 3.0)
