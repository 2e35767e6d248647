"""Topic names: `edge-gmm/v1/<device_id>/<kind>`. The `v1` bumps only when the payload schema breaks."""

from __future__ import annotations

import unicodedata

from edge_gmm.errors import ConfigError

ROOT = "edge-gmm/v1"
KINDS = ("prediction", "status", "metrics")
ID_FORBIDDEN = "/+#\\"  # topic separators and wildcards; a backslash is a path separator somewhere
# control, format (zero-width, bidi), surrogate, private-use, unassigned, line/paragraph separator characters
ID_FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def check_device_id(device_id: str) -> str:
    """A device id is one topic level, the MQTT client id and a spool directory name: printable, no '/', '+',
    '#', '\\', no '..', not empty, at most 128 bytes."""
    if not isinstance(device_id, str) or not _safe_id(device_id):
        raise ConfigError(
            f"device id {device_id!r}: use 1..128 printable characters without '/', '+', '#', '\\' or '..'",
            hint="for example jetson-01",
        )
    return device_id


def _safe_id(device_id: str) -> bool:
    return (
        0 < len(device_id.encode("utf-8", "surrogatepass")) <= 128
        and device_id.strip() == device_id  # no leading/trailing space: invisible in logs and paths
        and ".." not in device_id
        and device_id != "."
        and not any(c in ID_FORBIDDEN or unicodedata.category(c) in ID_FORBIDDEN_CATEGORIES for c in device_id)
    )


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
