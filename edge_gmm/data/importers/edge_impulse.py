"""Edge Impulse data-acquisition files (.json / .cbor): {protected: {ver, alg, iat}, signature, payload:
{device_name, device_type, interval_ms, sensors: [{name, units}], values: [[...], ...]}}.

One session per file; all sensors form one modality (`imu` when every sensor is acc*/gyr*, `audio` for a
single audio sensor, else `series`). Label: the class folder when SRC has one per class, else the file
name before its first '.' (Edge Impulse's own naming, e.g. `idle.3f2a.json`).

Signatures: with --hmac-key, alg must be HS256 and HMAC-SHA256(key, file bytes with the 64 hex digits of
the signature replaced by '0') must equal the signature; Edge Impulse signs exactly that way."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Session, Stream
from edge_gmm.data.importers import cbor
from edge_gmm.data.importers.common import Parsed, session_id
from edge_gmm.errors import DataError

SUFFIXES = (".json", ".cbor")


def read_file(path: Path, hmac_key: str = "") -> dict:
    """The payload of one file, signature checked when a key is given."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".cbor":
        doc = cbor.loads(raw, str(path))
    else:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: offset {e.start}: not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        raise DataError(f"{path}: not an Edge Impulse data file (no 'payload' object)")
    if hmac_key:
        verify(path, raw, doc, hmac_key)
    return doc["payload"]


def verify(path: Path, raw: bytes, doc: dict, key: str) -> None:
    alg = (doc.get("protected") or {}).get("alg", "none")
    sig = doc.get("signature", "")
    if alg != "HS256":
        raise DataError(f"{path}: not signed (protected.alg = {alg!r}), but --hmac-key asks for HS256 signatures")
    if not (isinstance(sig, str) and len(sig) == 64):
        raise DataError(f"{path}: signature must be 64 hex digits")
    needle = sig.encode("ascii")
    if raw.count(needle) != 1:
        raise DataError(f"{path}: cannot locate the signature in the file to verify it")
    signed = raw.replace(needle, b"0" * 64)
    want = hmac.new(key.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig.lower()):
        raise DataError(f"{path}: HMAC-SHA256 signature does not match (wrong key or modified file)")


def _payload_arrays(path: Path, p: dict) -> tuple[list[dict], float, np.ndarray]:
    sensors = p.get("sensors")
    if not isinstance(sensors, list) or not sensors or not all(isinstance(s, dict) and "name" in s for s in sensors):
        raise DataError(f"{path}: payload.sensors must be a list of {{name, units}}")
    interval = p.get("interval_ms")
    if not isinstance(interval, (int, float)) or not interval > 0:
        raise DataError(f"{path}: payload.interval_ms must be a positive number, got {interval!r}")
    values = p.get("values")
    if not isinstance(values, list) or not values:
        raise DataError(f"{path}: payload.values must be a non-empty list")
    rows = [v if isinstance(v, list) else [v] for v in values]
    for i, r in enumerate(rows):
        if len(r) != len(sensors) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r):
            raise DataError(f"{path}: payload.values[{i}]: expected {len(sensors)} numbers, got {str(r)[:60]}")
    return sensors, float(interval), np.asarray(rows, np.float32)


def _label_of(src: Path, f: Path) -> str:
    return f.parent.name if f.parent != src else f.name.split(".")[0]


def _files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DataError(f"{src}: no such file or folder")
    files = sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(f"{src}: no .json or .cbor files")
    return files


def load(src: Path, test: Path | None, opts) -> Parsed:
    items = [(src, f, None) for f in _files(src)] + ([(test, f, "test") for f in _files(test)] if test else [])
    parsed, first = [], None
    for root, f, split in items:
        sensors, interval, x = _payload_arrays(f, read_file(f, opts.hmac_key))
        names = [s["name"] for s in sensors]
        if first is None:
            first = (f, names, interval, sensors)
        elif (names, interval) != (first[1], first[2]):
            raise DataError(f"{f}: sensors {names} at {interval} ms differ from {first[0]}'s {first[1]} at {first[2]} ms")
        parsed.append((_label_of(root if root.is_dir() else root.parent, f), f, split, x))
    f0, names, interval, sensors = first
    labels = sorted({lab for lab, *_ in parsed})
    if len(labels) < 2:
        raise DataError(f"{src}: all files have label {labels[0]!r}; a classifier needs at least two", hint="name files <label>.<anything>.json or use one folder per class")
    low = [n.lower() for n in names]
    if len(names) == 1 and (low[0].startswith("audio") or str(sensors[0].get("units", "")).lower() == "wav"):
        kind, default = "audio", "audio"
    elif all(n.startswith(("acc", "gyr")) for n in low):
        kind, default = "imu", "imu"
    else:
        kind, default = "timeseries", "series"
    name = opts.modality or default
    rate = 1000.0 / interval
    sessions = []
    for i, (lab, f, split, x) in enumerate(parsed):
        t = np.arange(x.shape[0]) / rate
        sessions.append((Session(session_id(split or "train", i), {name: Stream(t, x[:, 0] if kind == "audio" else x)}, {"class": lab}, [], {"file": f.name}), split))
    sensor = SensorSpec(name, kind, rate, 1 if kind == "audio" else len(names), [str(s.get("units", "")) for s in sensors][: 1 if kind == "audio" else None])
    window = WindowSpec(opts.window_s or 1.0, opts.hop_s or (opts.window_s or 1.0) / 2)
    meta = {"source": str(src), "test_source": str(test) if test else None, "format": "edge-impulse", "sensors": names, "verified": bool(opts.hmac_key)}
    return Parsed(opts.name or (src.stem if src.is_file() else src.name), [sensor], [TaskSpec("class", "classification", labels)], window, sessions, meta)
