"""Payloads match their JSON Schemas; the schemas reject what a subscriber could not use."""

import pytest

from edge_gmm.errors import DataError
from edge_gmm.mqtt.payload import metrics_payload, prediction_payload, status_payload, validate


def sample(**over):
    kw = dict(
        device_id="jetson-01",
        window_start=100.0,
        window_end=101.0,
        model={"name": "fusion", "version": "3", "precision": "int8", "backend": "tensorrt"},
        tasks={"activity": {"label": "walk", "score": 0.91, "scores": {"walk": 0.91, "run": 0.09}},
               "anomaly": {"label": None, "score": float("nan"), "scores": {}}},
        sensors={"imu": "ok", "audio": "missing", "camera": "stale"},
        latency_ms={"assemble": 0.2, "infer": 3.1, "total": 3.6},
    )
    kw.update(over)
    return prediction_payload(**kw)


def test_prediction_with_seq_and_ts_validates():
    p = {**sample(), "seq": 7, "ts": 1.7e9}
    validate("prediction", p)
    assert p["tasks"]["anomaly"]["score"] is None  # NaN is not JSON; null is


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda p: p.pop("seq"), "seq"),
        (lambda p: p["sensors"].update(imu="broken"), "sensors/imu"),
        (lambda p: p["model"].update(precision="int4"), "model/precision"),
        (lambda p: p.update(extra=1), "extra"),
    ],
)
def test_schema_names_the_wrong_field(change, where):
    p = {**sample(), "seq": 7, "ts": 1.7e9}
    change(p)
    with pytest.raises(DataError) as e:
        validate("prediction", p)
    assert where.split("/")[0] in str(e.value)


def test_unknown_sensor_state_is_refused_at_build_time():
    with pytest.raises(ValueError, match="state"):
        sample(sensors={"imu": "dead"})


def test_status_and_metrics_validate():
    validate("status", status_payload("d", "offline", 1.0, {"model": {"name": "m"}, "reason": "stopped"}))
    counts = dict(published=3, acked=2, spooled=1, spool_dropped=0, reconnects=0)
    validate("metrics", metrics_payload("d", 1.0, {"latency_ms": {"infer": {"p99": 3.0}}}, counts))
    with pytest.raises(DataError):
        validate("status", status_payload("d", "sleeping", 1.0))
