"""MCU microseconds -> host seconds (time.monotonic()).

The MCU clock is a u32 microsecond counter that wraps every ~71.6 minutes and runs a little fast or
slow (crystal drift, tens of ppm). `McuClock.unwrap` extends it to 64 bits; sync points (MCU time at
send, host time at arrival) feed a fit host = a * mcu + b. Arrival = send + a non-negative delay, so
the slope comes from least squares over recent points and the intercept from the lower envelope
(the least-delayed point), which is where the true offset lies.
"""

from __future__ import annotations

from collections import deque

import numpy as np

WRAP = 1 << 32
HALF = 1 << 31
MAX_DRIFT = 1e-3  # a slope beyond 1 +- 1000 ppm is noise in the fit, not a real crystal
REANCHOR_S = 0.25  # a sync point this far off the fit means the MCU clock jumped (reset): start over


class McuClock:
    def __init__(self, window: int = 64, min_span_s: float = 2.0):
        self._last_ext: int | None = None
        self._points: deque[tuple[float, float]] = deque(maxlen=window)  # (mcu_s, host_s)
        self._min_span = min_span_s
        self.slope = 1.0
        self.intercept: float | None = None
        self.reanchors = 0

    def unwrap(self, t_us: int, epoch: int | None = None) -> int:
        """Extend a wrapped u32 timestamp to 64 bits, nearest to the last one seen (frames of different
        sensors interleave, so time may step back a little). `epoch` (TIME_SYNC) pins the high word."""
        if epoch is not None and (self._last_ext is None or abs(((epoch << 32) | t_us) - self._last_ext) > HALF):
            self._last_ext = (epoch << 32) | t_us
            return self._last_ext
        if self._last_ext is None:
            self._last_ext = t_us
            return t_us
        delta = ((t_us - (self._last_ext & (WRAP - 1)) + HALF) % WRAP) - HALF
        ext = self._last_ext + delta
        self._last_ext = max(self._last_ext, ext)
        return ext

    def observe(self, mcu_us: int, host_s: float) -> None:
        """A sync point: MCU time `mcu_us` (unwrapped) was sent and arrived at host time `host_s`."""
        m = mcu_us * 1e-6
        if self.intercept is not None and abs(host_s - self.to_host(mcu_us)) > REANCHOR_S:
            self._points.clear()
            self.slope, self.intercept = 1.0, None
            self.reanchors += 1
        self._points.append((m, host_s))
        self._fit()

    def ready(self) -> bool:
        return self.intercept is not None

    def to_host(self, mcu_us) -> float | np.ndarray:
        """Host seconds for unwrapped MCU microseconds (scalar or array)."""
        if self.intercept is None:
            raise RuntimeError("McuClock has no sync point yet")
        return self.slope * (np.asarray(mcu_us, dtype=np.float64) * 1e-6) + self.intercept

    @property
    def drift_ppm(self) -> float:
        return (self.slope - 1.0) * 1e6

    def _fit(self) -> None:
        pts = np.asarray(self._points)  # (K, 2)
        m, h = pts[:, 0], pts[:, 1]
        slope = 1.0
        if len(pts) >= 3 and m[-1] - m[0] >= self._min_span:
            mc = m - m.mean()
            slope = float(np.clip((mc @ (h - h.mean())) / (mc @ mc), 1 - MAX_DRIFT, 1 + MAX_DRIFT))
        self.slope = slope
        self.intercept = float(np.min(h - slope * m))
