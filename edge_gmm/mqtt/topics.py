"""Topic names: `edge-gmm/v1/<device_id>/<kind>`. The `v1` bumps only when the payload schema breaks."""

from __future__ import annotations

from edge_gmm.errors import ConfigError

ROOT = "edge-gmm/v1"
KINDS = ("prediction", "status", "metrics")


def check_device_id(device_id: str) -> str:
    """A device id is one topic level and the MQTT client id: no '/', '+', '#', not empty."""
    if not device_id or any(c in device_id for c in "/+#") or len(device_id.encode()) > 128:
        raise ConfigError(
            f"device id {device_id!r}: use 1..128 characters without '/', '+' or '#'",
            hint="for example jetson-01",
        )
    return device_id


def topic(device_id: str, kind: str) -> str:
    """`device_id` may be '+' (any device) when subscribing."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    if device_id != "+":
        check_device_id(device_id)
    return f"{ROOT}/{device_id}/{kind}"


def prediction_topic(device_id: str) -> str:
    return topic(device_id, "prediction")


def status_topic(device_id: str) -> str:
    return topic(device_id, "status")


def metrics_topic(device_id: str) -> str:
    return topic(device_id, "metrics")


def parse_topic(name: str) -> tuple[str, str] | None:
    """`edge-gmm/v1/<id>/<kind>` -> (id, kind); None for anything else."""
    parts = name.split("/")
    if len(parts) == 4 and "/".join(parts[:2]) == ROOT and parts[3] in KINDS:
        return parts[2], parts[3]
    return None
