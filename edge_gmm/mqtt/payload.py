"""Payloads of the three topics, built here so every publisher writes the same shape.

JSON Schemas (draft 2020-12) live next to this module in schema/<kind>.schema.json; docs/mqtt.md shows
examples. `validate(kind, payload)` checks one payload against its schema (needs `jsonschema`, a dev
dependency: devices build payloads, tests and subscribers validate them).
"""

from __future__ import annotations

import json
import math
import pkgutil
import re
from functools import lru_cache
from typing import Any

from edge_gmm.errors import DataError, MissingDependencyError

SCHEMA_VERSION = 1
SENSOR_STATES = ("ok", "stale", "missing")
MAX_PAYLOAD_BYTES = 256 << 10  # a prediction is well under 1 KiB; anything this big is not one of ours
MAX_DEPTH = 32  # our payloads nest 4 deep; json.loads recurses, so 50,000 '[' would raise RecursionError
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string: its brackets are not structure
_BRACKET = re.compile(rb"[\[\]{}]")


def prediction_payload(
    *,
    device_id: str,
    window_start: float,
    window_end: float,
    model: dict[str, Any],
    tasks: dict[str, dict[str, Any]],
    sensors: dict[str, str],
    latency_ms: dict[str, float],
) -> dict[str, Any]:
    """One fused prediction. The publisher adds `seq` (per device, survives restarts) and `ts` (publish time).

    window_start / window_end: seconds on the device's host clock (Unix epoch when it has one).
    model: name, version, precision (fp32|fp16|int8), backend (onnxrt|tensorrt|torch).
    tasks: task -> {label: str | None (None = below threshold / undecided), score: float, scores: {label: float}}.
    sensors: modality -> ok | stale | missing. latency_ms: stage -> milliseconds (e.g. assemble, infer, post,
    total; streaming adds fusion and encode).
    """
    for name, state in sensors.items():
        if state not in SENSOR_STATES:
            raise ValueError(f"sensor {name!r}: state must be one of {SENSOR_STATES}, got {state!r}")
    return {
        "v": SCHEMA_VERSION,
        "device_id": device_id,
        "window": {"start": float(window_start), "end": float(window_end)},
        "model": {k: str(model.get(k, "")) for k in ("name", "version", "precision", "backend")},
        "tasks": {
            task: {
                "label": out.get("label"),
                "score": _num(out.get("score", 0.0)),
                "scores": {str(k): _num(v) for k, v in (out.get("scores") or {}).items()},
            }
            for task, out in tasks.items()
        },
        "sensors": dict(sensors),
        "latency_ms": {k: _num(v) for k, v in latency_ms.items()},
    }


def status_payload(device_id: str, state: str, ts: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retained on the status topic: online on connect and on set_status, offline on stop or as last will."""
    return {"v": SCHEMA_VERSION, **(extra or {}), "device_id": device_id, "state": state, "ts": ts}


def metrics_payload(device_id: str, ts: float, values: dict[str, Any], publisher: dict[str, Any]) -> dict[str, Any]:
    """Periodic health: what the loop reports (latency per stage, drops, sensor states) plus publisher counters."""
    return {"v": SCHEMA_VERSION, **values, "device_id": device_id, "ts": ts, "publisher": publisher}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON. NaN/inf are not JSON: prediction_payload already turned them into null."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def decode(raw: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse one received payload into a JSON object; DataError (never RecursionError or MemoryError) otherwise.

    Size and nesting depth are checked before json.loads, which recurses once per level."""
    if len(raw) > max_bytes:
        raise DataError(f"payload of {len(raw)} bytes is over the {max_bytes}-byte limit")
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(raw) > max_depth:
        raise DataError(f"payload nests deeper than {max_depth} levels")
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise DataError(f"not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise DataError("not a JSON object")
    return payload


def _depth(raw: bytes) -> int:
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        depth += 1 if m.group() in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


@lru_cache(maxsize=None)
def load_schema(kind: str) -> dict[str, Any]:
    # pkgutil, not importlib.resources.files (3.9+): the device side runs on Python 3.8
    return json.loads(pkgutil.get_data("edge_gmm.mqtt", f"schema/{kind}.schema.json").decode("utf-8"))


@lru_cache(maxsize=None)
def _validator(kind: str):
    try:
        import jsonschema
    except ImportError:
        raise MissingDependencyError("validating payloads needs jsonschema: pip install jsonschema") from None
    schema = load_schema(kind)
    return jsonschema.Draft202012Validator(schema)


def validate(kind: str, payload: dict[str, Any]) -> None:
    """Raise DataError naming the first wrong field when `payload` does not match schema/<kind>.schema.json."""
    errors = sorted(_validator(kind).iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(top level)"
        raise DataError(f"{kind} payload: {where}: {e.message}")


def example_prediction(device_id: str = "jetson-01") -> dict[str, Any]:
    """A realistic prediction payload (without seq/ts) for docs, benchmarks, tests and demos."""
    return prediction_payload(
        device_id=device_id,
        window_start=1_790_000_000.0,
        window_end=1_790_000_001.0,
        model={"name": "fusion-student", "version": "1", "precision": "int8", "backend": "tensorrt"},
        tasks={"activity": {"label": "walking", "score": 0.93, "scores": {"walking": 0.93, "running": 0.05, "idle": 0.02}}},
        sensors={"imu": "ok", "audio": "ok", "camera": "stale"},
        latency_ms={"assemble": 0.31, "infer": 2.7, "post": 0.05, "total": 3.1},
    )
