"""Shared test vectors (firmware_bridge/vectors/vectors.txt): one frame per line, encoded by both the
Python codec and the C host program (firmware_bridge/host/egb_vectors.c); both must equal expected.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_gmm.firmware_bridge.protocol import (
    Descriptor,
    Frame,
    FrameType,
    SampleFormat,
    command_payload,
    descriptor_payload,
    encode_frame,
    heartbeat_payload,
    log_payload,
    samples_payload,
    time_sync_payload,
)

VECTOR_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "vectors"
FORMATS = {"int16": SampleFormat.INT16, "int32": SampleFormat.INT32, "float32": SampleFormat.FLOAT32}


def load_vectors(path: Path = VECTOR_DIR / "vectors.txt") -> list[tuple[str, Frame]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, *pairs = line.split()
        kv = dict(p.split("=", 1) for p in pairs)
        out.append((name, _frame(kv)))
    return out


def _frame(kv: dict[str, str]) -> Frame:
    seq, t_us, sensor = int(kv["seq"]), int(kv["t_us"]), int(kv["sensor"])
    kind = kv["type"]
    if kind == "descriptor":
        d = Descriptor(sensor, kv["name"], kv["kind"], float(kv["rate"]), int(kv["channels"]),
                       FORMATS[kv["format"]], float(kv["scale"]), kv["units"].split(","))
        return Frame(FrameType.DESCRIPTOR, sensor, seq, t_us, payload=descriptor_payload(d))
    if kind == "samples":
        fmt, ch = FORMATS[kv["format"]], int(kv["channels"])
        parse = float if fmt == SampleFormat.FLOAT32 else int
        values = np.array([parse(v) for v in kv["values"].split(",")]).reshape(-1, ch)
        return Frame(FrameType.SAMPLES, sensor, seq, t_us, fmt, len(values), samples_payload(values, fmt))
    if kind == "time_sync":
        return Frame(FrameType.TIME_SYNC, sensor, seq, t_us, payload=time_sync_payload(int(kv["epoch"])))
    if kind == "heartbeat":
        return Frame(FrameType.HEARTBEAT, sensor, seq, t_us, payload=heartbeat_payload(int(kv["overruns"])))
    if kind == "log":
        return Frame(FrameType.LOG, sensor, seq, t_us, payload=log_payload(int(kv["level"]), kv["text"]))
    if kind == "command":
        return Frame(FrameType.COMMAND, sensor, seq, t_us, payload=command_payload(int(kv["command"]), float(kv["value"])))
    raise ValueError(f"unknown vector type {kind!r}")


def encode_vectors(path: Path = VECTOR_DIR / "vectors.txt") -> str:
    """The text of expected.txt: 'NAME HEX' per vector."""
    return "".join(f"{name} {encode_frame(f).hex()}\n" for name, f in load_vectors(path))
