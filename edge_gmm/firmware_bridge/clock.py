"""MCU microseconds -> host seconds (time.monotonic()).

The MCU clock is a u32 microsecond counter that wraps every ~71.6 minutes and runs a little fast or
slow (crystal drift, tens of ppm). `McuClock.unwrap` extends it to 64 bits; sync points (MCU time at
send, host time at arrival) feed a fit host = a * mcu + b. Arrival = send + a non-negative delay, so
both come from the lower envelope of the points: the slope joins the least-delayed point of the older
half of the window to that of the newer half, the intercept sits on the least-delayed point. A point
that arrives late (host stalled, bytes backlogged) therefore moves nothing.
"""

from __future__ import annotations

from collections import deque

import numpy as np

WRAP = 1 << 32
HALF = 1 << 31
MAX_DRIFT = 1e-3  # a slope beyond 1 +- 1000 ppm is noise in the fit, not a real crystal
EARLY_S = 0.25  # a point this much EARLIER than the fit allows: the fit was built on stale (backlogged) points
RESET_S = 5.0  # a point this much later than the fit: the MCU clock restarted (reset), not a slow link


class McuClock:
    def __init__(self, window: int = 64, min_span_s: float = 2.0):
        self._last_ext: int | None = None
        self._points: deque[tuple[float, float]] = deque(maxlen=window)  # (mcu_s, host_s)
        self._min_span = min_span_s
        self.slope = 1.0
        self.intercept: float | None = None
        self.reanchors = 0

    def unwrap(self, t_us: int, epoch: int | None = None, commit: bool = True) -> int:
        """Extend a wrapped u32 timestamp to 64 bits, nearest to the last one seen (frames of different
        sensors interleave, so time may step back a little). `epoch` (TIME_SYNC) pins the high word.
        `commit=False` only looks: a frame that may be refused must not drag the reference along."""
        if not commit:
            if self._last_ext is None:
                return t_us
            return self._last_ext + ((t_us - (self._last_ext & (WRAP - 1)) + HALF) % WRAP) - HALF
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
        residual = host_s - self.to_host(mcu_us) if self.intercept is not None else 0.0
        if residual < -EARLY_S or residual > RESET_S:
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
        pts = np.asarray(self._points)  # (K, 2): mcu_s, host_s
        m, h = pts[:, 0], pts[:, 1]
        slope = 1.0
        if len(pts) >= 6 and m.max() - m.min() >= self._min_span:
            order = np.argsort(m)
            old, new = order[: len(order) // 2], order[len(order) // 2 :]
            i, j = old[np.argmin(h[old] - m[old])], new[np.argmin(h[new] - m[new])]
            if m[j] - m[i] >= self._min_span / 2:
                slope = float(np.clip((h[j] - h[i]) / (m[j] - m[i]), 1 - MAX_DRIFT, 1 + MAX_DRIFT))
        self.slope = slope
        self.intercept = float(np.min(h - slope * m))
