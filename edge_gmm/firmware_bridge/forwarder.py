"""Edge Impulse data-forwarder lines -> SensorChunks, so firmware written for `edge-impulse-data-forwarder`
works unchanged: one reading per line, values separated by ',', '\\t' or ' ', rate given or detected.

The first line after connecting is dropped (it is usually the tail of a line already in flight).
Lines carry no timestamps: sample n is at n / rate on a virtual MCU clock, mapped to the host clock
with the same lower-envelope fit as binary frames, which also absorbs a rate that is slightly off.
A detected rate comes from the steady parts of the stream: lines arrive in bursts (one per read), and a
pause between bursts (firmware busy, a stalled host) says nothing about the sample rate, so it is left out.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from edge_gmm.config import MAX_RATE_HZ, MIN_RATE_HZ, SensorSpec
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
DETECT_MIN_READS = 8  # ... in this many reads after the first, so the typical spacing means something
PAUSE_FACTOR = 4.0  # a read that waited this many times longer per line than is typical ends a pause ...
PAUSE_MIN_S = 0.1  # ... and waited at least this long (reads split a burst into pieces much closer than that)
SYNC_EVERY = 10  # lines between clock sync points
FLOAT32_MAX = float(np.finfo(np.float32).max)  # 1e39 parses as a float but is inf in a float32 window

log = logging.getLogger(__name__)


def _round_rate(r: float) -> float:
    """Whole Hz from 10 Hz up, else two significant digits: never 0 for a rate above 0 (0.03 Hz stays 0.03)."""
    return float(round(r)) if r >= 10 else float(f"{r:.2g}")


def steady_rate(arrivals: np.ndarray, lines: np.ndarray) -> tuple[float, float]:
    """(lines per second, seconds observed) over the reads that followed the first, pauses left out.

    arrivals: float64[R] host time of each read; lines: int[R] lines it brought. Read i covers the time since
    read i-1; it is a pause when it took far longer per line than the typical (line-weighted median) read --
    unless the reads right after it catch up: then the *reader* was late (a loaded host), the lines were sent
    on time meanwhile, and leaving that time out while counting the backlog would overstate the rate.
    """
    gaps, n = np.diff(arrivals), lines[1:]
    per_line = gaps / n
    order = np.argsort(per_line)
    cum = np.cumsum(n[order])
    typical = per_line[order][np.searchsorted(cum, cum[-1] / 2)]
    steady = gaps <= np.maximum(PAUSE_FACTOR * n * typical, PAUSE_MIN_S)
    for i in np.flatnonzero(~steady):
        owed, j = int(n[i]), i + 1
        while j < len(gaps) and gaps[j] < 0.5 * n[j] * typical:  # faster than the source sends: a backlog
            owed += int(n[j])
            j += 1
        steady[i] = owed * typical * PAUSE_FACTOR >= gaps[i]  # the backlog fills the gap: a late reader
    span = float(gaps[steady].sum())
    return (float(n[steady].sum()) / span if span > 0 else 0.0), span


class ForwarderLink:
    def __init__(self, frequency: float | None = None, name: str | None = None, kind: str | None = None,
                 units: list[str] | None = None, stats: LinkStats | None = None):
        if frequency is not None and not MIN_RATE_HZ <= frequency <= MAX_RATE_HZ:  # also NaN and inf
            raise ConfigError(f"--frequency must be within [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}] Hz, got {frequency}")
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
            # "nan" / "inf" parse, but no sensor reads them; 1e39 is finite here and inf as float32
            if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values):
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
        # one read = one arrival time; the first read's lines came over an unknown time before it
        arrivals, lines = np.unique(np.array([a for a, _ in self._pending]), return_counts=True)
        if len(arrivals) <= DETECT_MIN_READS or lines[1:].sum() < DETECT_MIN_LINES:
            return False
        rate, span = steady_rate(arrivals, lines)
        if span < DETECT_MIN_S:
            return False
        if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:  # refuse, and start over on fresh lines
            self.stats.bad_descriptor += 1
            log.warning("forwarder: detected %.3g Hz from %d lines, outside [%g, %g] Hz; detecting again "
                        "(give the rate with frequency=HZ)", rate, len(self._pending), MIN_RATE_HZ, MAX_RATE_HZ)
            self._pending.clear()
            return False
        self.rate = _round_rate(rate)
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
