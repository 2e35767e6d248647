"""Edge Impulse data-forwarder lines -> SensorChunks, so firmware written for `edge-impulse-data-forwarder`
works unchanged: one reading per line, values separated by ',', '\\t' or ' ', rate given or detected.

The first line after connecting is dropped (it is usually the tail of a line already in flight).
Lines carry no timestamps: sample n is at n / rate on a virtual MCU clock, mapped to the host clock
with the same lower-envelope fit as binary frames, which also absorbs a rate that is slightly off.
"""

from __future__ import annotations

import math
import re

import numpy as np

from edge_gmm.config import SensorSpec
from edge_gmm.data.format import SensorChunk
from edge_gmm.errors import ConfigError
from edge_gmm.firmware_bridge.clock import McuClock
from edge_gmm.firmware_bridge.decoder import LinkStats

START_COMMAND = b"AT+STARTDATAFWD\r\n"
STOP_COMMAND = b"AT+STOPDATAFWD\r\n"
_SPLIT = re.compile(r"[,\t ]+")
MAX_LINE = 4096  # bytes without a newline before we call it noise
DETECT_MIN_S = 1.0  # rate detection: observe at least this long ...
DETECT_MIN_LINES = 20  # ... and this many lines
SYNC_EVERY = 10  # lines between clock sync points


def _round_rate(r: float) -> float:
    return float(round(r)) if r >= 10 else round(r, 1)


class ForwarderLink:
    def __init__(self, frequency: float | None = None, name: str | None = None, kind: str | None = None,
                 units: list[str] | None = None, stats: LinkStats | None = None):
        if frequency is not None and not frequency > 0:
            raise ConfigError(f"--frequency must be > 0 Hz, got {frequency}")
        self.stats = stats or LinkStats()
        self.rate = float(frequency) if frequency else None
        self.name, self.kind, self.units = name, kind, list(units or [])
        self.channels: int | None = None
        self.clock = McuClock()
        self._buf = bytearray()
        self._skip_first = True
        self._n = 0  # samples emitted so far (index on the virtual clock)
        self._pending: list[tuple[float, list[float]]] = []  # (arrival, values) while the rate is unknown

    def reset_link(self) -> None:
        self.stats.bytes_dropped += len(self._buf)
        self._buf.clear()
        self._skip_first = True

    def sensors(self) -> list[SensorSpec]:
        if self.channels is None or self.rate is None:
            return []
        return [self._spec()]

    def _spec(self) -> SensorSpec:
        kind = self.kind or ("imu" if self.channels in (3, 6, 9) else "timeseries")
        name = self.name or ("imu" if kind == "imu" else "forwarder")
        units = self.units if len(self.units) == self.channels else []
        return SensorSpec(name=name, kind=kind, rate=self.rate, channels=self.channels, units=units)

    def feed(self, data: bytes, host_t: float) -> list[SensorChunk]:
        self.stats.bytes_in += len(data)
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > MAX_LINE:
                self.stats.bytes_dropped += len(self._buf)
                self.stats.malformed += 1
                self._buf.clear()
            return []
        lines = self._buf.split(b"\n")
        self._buf = bytearray(lines.pop())
        rows = []
        for raw in lines:
            if self._skip_first:
                self._skip_first = False
                self.stats.bytes_dropped += len(raw) + 1
                continue
            values = self._parse(raw)
            if values is None:
                continue
            rows.append(values)
        if not rows:
            return []
        if self.rate is None:
            self._pending += [(host_t, r) for r in rows]
            if not self._detect():
                return []
            rows = [r for _, r in self._pending]
            self._pending.clear()
        return [self._chunk(rows, host_t)]

    def _parse(self, raw: bytes) -> list[float] | None:
        text = raw.decode("ascii", "replace").strip()
        if not text:
            return None
        try:
            values = [float(v) for v in _SPLIT.split(text)]
            if not all(math.isfinite(v) for v in values):  # "nan" / "inf" parse, but no sensor reads them
                raise ValueError
        except ValueError:  # a boot banner, a debug print, a line hit by noise
            self.stats.malformed += 1
            self.stats.bytes_dropped += len(raw) + 1
            return None
        if self.channels is None:
            self.channels = len(values)
        elif len(values) != self.channels:
            self.stats.malformed += 1
            self.stats.bytes_dropped += len(raw) + 1
            return None
        self.stats.frames += 1
        return values

    def _detect(self) -> bool:
        t = [a for a, _ in self._pending]
        span = t[-1] - t[0]
        if len(t) < DETECT_MIN_LINES or span < DETECT_MIN_S:
            return False
        # lines arrive in bursts: count the lines after the first burst over the time since it
        first_burst = sum(1 for a in t if a == t[0])
        self.rate = _round_rate((len(t) - first_burst) / span)
        return True

    def _chunk(self, rows: list[list[float]], host_t: float) -> SensorChunk:
        x = np.asarray(rows, dtype=np.float32)  # [n, channels]
        n0 = self._n
        self._n += len(rows)
        step_us = 1e6 / self.rate
        last_us = int((self._n - 1) * step_us)
        if not self.clock.ready() or self._n // SYNC_EVERY != n0 // SYNC_EVERY:
            self.clock.observe(last_us, host_t)  # the newest line arrived at host_t
        t = self.clock.to_host((n0 + np.arange(len(rows))) * step_us)
        return SensorChunk(self._spec().name, t, x)
