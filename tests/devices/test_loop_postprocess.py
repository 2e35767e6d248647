"""Post-processing a subscriber relies on: probabilities, steady labels, thresholds, settings from the manifest."""

import numpy as np
import pytest

from edge_gmm.devices.postprocess import PostProcessor, TaskPost, softmax
from edge_gmm.errors import BundleError

LABELS = ["normal", "fault"]


def logits(p_fault: float) -> dict:
    """Logits whose softmax gives P(fault) = p_fault."""
    return {"logits_state": np.array([[0.0, np.log(p_fault / (1 - p_fault))]], np.float32)}


def test_softmax_is_stable_and_sums_to_one():
    p = softmax(np.array([1000.0, 0.0, -1000.0]))
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(1.0)


def test_plain_settings_report_the_argmax_with_all_scores():
    post = PostProcessor([TaskPost("state", labels=LABELS)])
    out = post(logits(0.8))["state"]
    assert out["label"] == "fault"
    assert out["score"] == pytest.approx(0.8, abs=1e-6)
    assert out["scores"] == pytest.approx({"normal": 0.2, "fault": 0.8}, abs=1e-6)


def test_hysteresis_and_hold_keep_one_noisy_window_from_flipping_the_label():
    post = PostProcessor([TaskPost("state", labels=LABELS, hysteresis=0.2, min_hold=2)])
    seen = [post(logits(p))["state"]["label"] for p in (0.1, 0.55, 0.9, 0.1, 0.9, 0.9)]
    # 0.55: lead 0.1 < margin; 0.9 once: not held long enough; 0.1 resets; two 0.9 in a row: switch
    assert seen == ["normal", "normal", "normal", "normal", "normal", "fault"]


def test_smoothing_averages_scores_over_windows():
    post = PostProcessor([TaskPost("state", labels=LABELS, smoothing=0.5)])
    post(logits(0.2))
    out = post(logits(0.8))["state"]
    assert out["scores"]["fault"] == pytest.approx(0.5, abs=1e-6)


def test_below_threshold_the_label_is_undecided_but_scores_stay():
    post = PostProcessor([TaskPost("state", labels=LABELS, threshold=0.7)])
    out = post(logits(0.6))["state"]
    assert out["label"] is None and out["scores"]["fault"] == pytest.approx(0.6, abs=1e-6)


def test_settings_come_from_the_manifest_defaults_then_per_task():
    manifest = {"tasks": [{"name": "state", "type": "classification", "labels": LABELS}],
                "postprocess": {"smoothing": 0.3, "tasks": {"state": {"threshold": 0.9}}}}
    (post,) = PostProcessor.from_manifest(manifest).posts
    assert (post.smoothing, post.threshold, post.labels) == (0.3, 0.9, LABELS)


def test_a_mistyped_manifest_key_names_the_task_and_key():
    manifest = {"tasks": [{"name": "state", "labels": LABELS}], "postprocess": {"tasks": {"state": {"treshold": 0.9}}}}
    with pytest.raises(BundleError, match="state.*treshold"):
        PostProcessor.from_manifest(manifest)


def test_anomaly_and_regression_results_have_the_payload_shape():
    post = PostProcessor([TaskPost("anom", type="anomaly", threshold=0.5),
                          TaskPost("temp", type="regression", labels=["degC"])])
    out = post({"logits_anom": np.array([[0.7]]), "logits_temp": np.array([[41.5]])})
    assert out["anom"]["label"] == "anomaly" and out["anom"]["score"] == pytest.approx(0.7)
    assert out["temp"] == {"label": None, "score": pytest.approx(41.5), "scores": {"degC": pytest.approx(41.5)}}


def test_a_missing_model_output_is_a_bundle_error():
    with pytest.raises(BundleError, match="logits_state"):
        PostProcessor([TaskPost("state", labels=LABELS)])({"embedding": np.zeros((1, 4))})
