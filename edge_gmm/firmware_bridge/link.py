"""Frames -> SensorChunks: learns sensors from descriptors, maps MCU time to the host clock.

A `FrameLink` is what the reader feeds with bytes and arrival times; it holds no port and no thread,
so tests and benchmarks drive it directly.
"""

from __future__ import annotations

import logging
import struct
from collections import deque

import numpy as np

from edge_gmm.config import SensorSpec
from edge_gmm.data.format import SensorChunk
from edge_gmm.firmware_bridge.clock import McuClock
from edge_gmm.firmware_bridge.decoder import LinkStats, StreamDecoder
from edge_gmm.firmware_bridge.protocol import (
    FORMAT_DTYPE,
    Descriptor,
    DescriptorRejected,
    Frame,
    FrameType,
    parse_descriptor,
)

log = logging.getLogger(__name__)

# A sample cannot be taken after it arrives, and what the port buffers is seconds old, not minutes. Beyond
# these the frame's t_us is corrupt (a CRC-valid frame 2**31 us off would put windows 36 min away): drop it.
MAX_AHEAD_S = 10.0  # a burst sent faster than real time (a test, a replaying MCU) runs a few seconds ahead
MAX_BEHIND_S = 60.0


class FrameLink:
    def __init__(self, stats: LinkStats | None = None):
        self.decoder = StreamDecoder(stats)
        self.clock = McuClock()
        self.descriptors: dict[int, Descriptor] = {}
        self.logs: deque[tuple[int, str]] = deque(maxlen=100)  # (level, text) from LOG frames
        self.undescribed = 0  # SAMPLES frames of a sensor no descriptor has announced yet (dropped)
        self.bad_payload = 0  # CRC-good frames whose payload does not match their header or descriptor
        self.mcu_overruns = 0  # the MCU's own count of frames it could not send (HEARTBEAT)
        self.commands_seen = 0  # COMMAND frames read back (loop:// echoes what the host writes)

    @property
    def stats(self) -> LinkStats:
        return self.decoder.stats

    def reset_link(self) -> None:
        self.decoder.reset_link()

    def sensors(self) -> list[SensorSpec]:
        return [d.spec() for _, d in sorted(self.descriptors.items())]

    def feed(self, data: bytes, host_t: float) -> list[SensorChunk]:
        out = []
        for f in self.decoder.feed(data):
            chunk = self._handle(f, host_t)
            if chunk is not None:
                out.append(chunk)
        return out

    def _handle(self, f: Frame, host_t: float) -> SensorChunk | None:
        try:
            if f.type == FrameType.SAMPLES:
                return self._samples(f, host_t)
            if f.type == FrameType.DESCRIPTOR:
                d = parse_descriptor(f)
                self.descriptors[d.sensor] = d
                self.clock.observe(self.clock.unwrap(f.t_us), host_t)
            elif f.type == FrameType.TIME_SYNC:
                (epoch,) = struct.unpack_from("<I", f.payload, 0)
                self.clock.observe(self.clock.unwrap(f.t_us, epoch), host_t)
            elif f.type == FrameType.HEARTBEAT:
                (self.mcu_overruns,) = struct.unpack_from("<I", f.payload, 0)
                self.clock.observe(self.clock.unwrap(f.t_us), host_t)
            elif f.type == FrameType.LOG:
                self.logs.append((f.payload[0] if f.payload else 0, bytes(f.payload[1:]).decode("utf-8", "replace")))
            elif f.type == FrameType.COMMAND:
                self.commands_seen += 1
        except DescriptorRejected as e:
            self.stats.bad_descriptor += 1
            if self.stats.bad_descriptor == 1:  # once: a firmware bug repeats it every second
                log.warning("descriptor refused (counted in bad_descriptor): %s", e)
        except (ValueError, struct.error, IndexError):
            self.bad_payload += 1
        return None

    def _samples(self, f: Frame, host_t: float) -> SensorChunk | None:
        d = self.descriptors.get(f.sensor)
        if d is None:
            self.undescribed += 1
            return None
        if f.format not in FORMAT_DTYPE or f.count == 0:
            self.bad_payload += 1
            return None
        dtype, size = FORMAT_DTYPE[f.format]
        if len(f.payload) != f.count * d.channels * size:
            self.bad_payload += 1
            return None
        raw = np.frombuffer(f.payload, dtype=dtype).reshape(f.count, d.channels)
        x = raw.astype(np.float32)
        if d.scale != 1.0:
            with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
                x *= np.float32(d.scale)
        if not np.isfinite(x).all():  # NaN/inf float32 payloads, or a scale that overflows: no sensor reads them
            self.bad_payload += 1
            return None
        t0 = self.clock.unwrap(f.t_us, commit=False)
        step_us = 1e6 / d.rate
        if not self.clock.ready():
            # no sync point yet: the frame left the MCU right after its last sample was taken
            self.clock.observe(int(t0 + (f.count - 1) * step_us), host_t)
        t = self.clock.to_host(t0 + np.arange(f.count) * step_us)  # float64[count]
        if t[-1] > host_t + MAX_AHEAD_S or t[0] < host_t - MAX_BEHIND_S:
            self.stats.bad_time += 1
            if self.stats.bad_time == 1:
                log.warning("sensor %s: a SAMPLES frame maps %+.0f s from its arrival; dropped (counted in bad_time)",
                            d.name, t[0] - host_t)
            return None
        self.clock.unwrap(f.t_us)
        return SensorChunk(d.name, t, x)
