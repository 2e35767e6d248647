"""Frame layout of the MCU link (firmware_bridge/PROTOCOL.md is the normative text).

Wire: COBS(body) 0x00. Body, little-endian:

    offset size field
    0      1    version   (PROTOCOL_VERSION)
    1      1    type      (FrameType)
    2      1    sensor    sensor id (0..254; 255 = all, in commands)
    3      1    format    SampleFormat of the payload values (0 when the frame carries no samples)
    4      2    seq       link sequence number, +1 per frame the MCU sends, wraps at 65536
    6      4    t_us      MCU clock in microseconds, wraps at 2**32 (~71.6 min)
    10     2    count     samples in the frame (SAMPLES); 0 otherwise
    12     n    payload
    12+n   4    crc       CRC-32/ISO-HDLC (zlib.crc32: poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF)
                          over bytes 0 .. 12+n-1
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from edge_gmm.config import MAX_RATE_HZ, MIN_RATE_HZ, SensorSpec
from edge_gmm.errors import ConfigError
from edge_gmm.firmware_bridge.cobs import cobs_encode, max_encoded_len

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBBBHIH")  # version, type, sensor, format, seq, t_us, count
HEADER_SIZE = HEADER.size  # 12
CRC_SIZE = 4
MAX_PAYLOAD = 2048
MAX_BODY = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = max_encoded_len(MAX_BODY)
ALL_SENSORS = 0xFF


class FrameType(IntEnum):
    DESCRIPTOR = 1  # MCU -> host: one sensor's name, kind, rate, channels, format, scale, units
    SAMPLES = 2  # MCU -> host: `count` samples x channels values; t_us = time of the first sample
    TIME_SYNC = 3  # MCU -> host: t_us = now; payload u32 wrap epoch (high word of the 64-bit clock)
    HEARTBEAT = 4  # MCU -> host: payload u32 tx_overruns (frames the MCU could not send)
    LOG = 5  # MCU -> host: payload u8 level + UTF-8 text
    COMMAND = 16  # host -> MCU: payload u8 Command + f32 value; sensor = target (255 = all)


class SampleFormat(IntEnum):
    NONE = 0
    INT16 = 1
    INT32 = 2
    FLOAT32 = 3


class Command(IntEnum):
    START = 1
    STOP = 2
    SET_RATE = 3  # value = new rate in Hz
    DESCRIBE = 4  # ask the MCU to send its descriptors now


# Sample format -> (numpy dtype string, bytes per value)
FORMAT_DTYPE = {SampleFormat.INT16: ("<i2", 2), SampleFormat.INT32: ("<i4", 4), SampleFormat.FLOAT32: ("<f4", 4)}
# Sensor kind code on the wire <-> SensorSpec.kind (a camera does not travel over a serial link)
KIND_CODES = {0: "imu", 1: "timeseries", 2: "audio"}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
DESCRIPTOR_FIXED = struct.Struct("<BBBBff")  # kind, channels, format, reserved, rate, scale


@dataclass
class Frame:
    type: int
    sensor: int = 0
    seq: int = 0
    t_us: int = 0
    format: int = 0
    count: int = 0
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


@dataclass
class Descriptor:
    """What a DESCRIPTOR frame says about one sensor. Value = raw * scale, in `units`."""

    sensor: int
    name: str
    kind: str
    rate: float
    channels: int
    format: int
    scale: float = 1.0
    units: list[str] = field(default_factory=list)

    def spec(self) -> SensorSpec:
        units = self.units if len(self.units) == self.channels else []
        return SensorSpec(name=self.name, kind=self.kind, rate=self.rate, channels=self.channels, units=units)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def frame_body(f: Frame) -> bytes:
    if len(f.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(f.payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    head = HEADER.pack(f.version, f.type, f.sensor, f.format, f.seq & 0xFFFF, f.t_us & 0xFFFFFFFF, f.count)
    body = head + bytes(f.payload)
    return body + struct.pack("<I", crc32(body))


def encode_frame(f: Frame) -> bytes:
    """One frame as it goes on the wire: COBS(body) + 0x00."""
    return cobs_encode(frame_body(f)) + b"\x00"


# ------------------------------------------------------------------ payload builders and parsers


def descriptor_payload(d: Descriptor) -> bytes:
    name = d.name.encode("utf-8")
    units = ",".join(d.units).encode("utf-8")
    if len(name) > 255 or len(units) > 255:
        raise ValueError("descriptor name and units must each fit in 255 bytes")
    fixed = DESCRIPTOR_FIXED.pack(KIND_NAMES[d.kind], d.channels, d.format, 0, d.rate, d.scale)
    return fixed + bytes([len(name)]) + name + bytes([len(units)]) + units


def parse_descriptor(f: Frame) -> Descriptor:
    """Raises ValueError on a malformed payload. Trailing bytes are ignored (fields added in later versions)."""
    p = f.payload
    if len(p) < DESCRIPTOR_FIXED.size + 2:
        raise ValueError("descriptor payload too short")
    kind, channels, fmt, _, rate, scale = DESCRIPTOR_FIXED.unpack_from(p, 0)
    i = DESCRIPTOR_FIXED.size
    n = p[i]
    name_raw = bytes(p[i + 1 : i + 1 + n])
    i += 1 + n
    if len(name_raw) != n or i >= len(p):
        raise ValueError("descriptor name truncated")
    name = name_raw.decode("utf-8")
    m = p[i]
    units_raw = bytes(p[i + 1 : i + 1 + m])
    if len(units_raw) != m:
        raise ValueError("descriptor units truncated")
    units = units_raw.decode("utf-8").split(",") if m else []
    if kind not in KIND_CODES or fmt not in FORMAT_DTYPE or channels < 1:
        raise ValueError(f"descriptor has kind={kind} format={fmt} channels={channels}")
    d = Descriptor(f.sensor, name, KIND_CODES[kind], float(rate), channels, fmt, float(scale), units)
    check_descriptor(d)
    return d


class DescriptorRejected(ValueError):
    """A well-formed descriptor announcing what no sensor is: a rate of 1e-6 Hz or inf, a scale of NaN."""


def check_descriptor(d: Descriptor) -> None:
    """Refuse what would poison the host: a 1e-6 Hz rate spaces samples 11 days apart (the assembler then cuts
    windows without end), an infinite scale turns every value into inf. The bounds are SensorSpec's own."""
    if not MIN_RATE_HZ <= d.rate <= MAX_RATE_HZ:  # also NaN and inf
        raise DescriptorRejected(f"sensor {d.sensor} ({d.name!r}) announces rate {d.rate:g} Hz, "
                                 f"outside [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}]")
    if not math.isfinite(d.scale):
        raise DescriptorRejected(f"sensor {d.sensor} ({d.name!r}) announces scale {d.scale}")
    try:
        d.spec()  # whatever else SensorSpec refuses (stereo audio, ...)
    except ConfigError as e:
        raise DescriptorRejected(str(e)) from None


def samples_payload(values, fmt: int) -> bytes:
    """values: array-like [count, channels] of raw integers (int formats) or floats (FLOAT32)."""
    import numpy as np

    dtype, _ = FORMAT_DTYPE[SampleFormat(fmt)]
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def command_payload(cmd: int, value: float = 0.0) -> bytes:
    return struct.pack("<Bf", cmd, value)


def parse_command(f: Frame) -> tuple[int, float]:
    if len(f.payload) < 5:
        raise ValueError("command payload too short")
    cmd, value = struct.unpack_from("<Bf", f.payload, 0)
    return cmd, value


def time_sync_payload(epoch: int) -> bytes:
    return struct.pack("<I", epoch & 0xFFFFFFFF)


def heartbeat_payload(tx_overruns: int) -> bytes:
    return struct.pack("<I", tx_overruns & 0xFFFFFFFF)


def log_payload(level: int, text: str) -> bytes:
    return bytes([level & 0xFF]) + text.encode("utf-8")[: MAX_PAYLOAD - 1]


# ------------------------------------------------------------------ whole frames, for hosts and tests


def descriptor_frame(d: Descriptor, seq: int = 0, t_us: int = 0) -> Frame:
    return Frame(FrameType.DESCRIPTOR, d.sensor, seq, t_us, payload=descriptor_payload(d))


def samples_frame(sensor: int, values, fmt: int = SampleFormat.INT16, seq: int = 0, t_us: int = 0) -> Frame:
    """values: [count, channels] raw values; t_us = MCU time of the first sample."""
    payload = samples_payload(values, fmt)
    return Frame(FrameType.SAMPLES, sensor, seq, t_us, fmt, len(values), payload)
