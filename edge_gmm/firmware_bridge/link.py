"""Frames -> SensorChunks: learns sensors from descriptors, maps MCU time to the host clock.

A `FrameLink` is what the reader feeds with bytes and arrival times; it holds no port and no thread,
so tests and benchmarks drive it directly.
"""

from __future__ import annotations

import struct
from collections import deque

import numpy as np

from edge_gmm.config import SensorSpec
from edge_gmm.data.format import SensorChunk
from edge_gmm.firmware_bridge.clock import McuClock
from edge_gmm.firmware_bridge.decoder import LinkStats, StreamDecoder
from edge_gmm.firmware_bridge.protocol import FORMAT_DTYPE, Descriptor, Frame, FrameType, parse_descriptor


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
            x *= np.float32(d.scale)
        t0 = self.clock.unwrap(f.t_us)
        step_us = 1e6 / d.rate
        if not self.clock.ready():
            # no sync point yet: the frame left the MCU right after its last sample was taken
            self.clock.observe(int(t0 + (f.count - 1) * step_us), host_t)
        t = self.clock.to_host(t0 + np.arange(f.count) * step_us)  # float64[count]
        return SensorChunk(d.name, t, x)
