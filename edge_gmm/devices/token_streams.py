"""One modality's token stream on the device: raw samples in, encoded tokens out, once per token (numpy only).

A streamable encoder (DESIGN.md, "Streaming") makes each token from the raw samples of its own span, so the
device encodes a token once, when its span's time has passed, at the sensor's own rate, and keeps the last
window's tokens for the fusion graph. `TokenLayout` says how a modality is tokenized; `SpanStream` serves the
sampled kinds (imu / timeseries / audio), `FrameStream` the camera. Both take clean, in-order pieces: the bad-time
defences (non-finite, out-of-order, jumps) sit in devices/tokens.py, which owns every stream's clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge_gmm.config import SensorSpec, WindowSpec
from edge_gmm.data.windowing import cut_window, has_passed
from edge_gmm.errors import BundleError, ConfigError

Encoder = Callable[[np.ndarray], np.ndarray]  # one span in model layout -> (per_call, D)

MAX_SPANS_PER_CALL = 64  # spans (camera: frames) one stream cuts per advance(): bounds the work of a pop_ready
_GRID_SLACK = 1e-6  # token hops: float slack when rounding a window start onto a token grid


@dataclass(frozen=True)
class TokenLayout:
    """How one modality's encoder tokenizes a window (the bundle manifest carries it).

    Token i of a window covers window samples [i*hop, i*hop + span) counted from its first sample; one encoder
    call takes one span in model layout (imu/timeseries (C, span), audio (span,), camera (3, H, W)) and yields
    `per_call` tokens (camera: grid*grid, others 1). `tokens` is the window's token count the fusion graph takes.
    """

    modality: str
    span: int  # raw samples per token (camera: 1 frame)
    hop: int  # samples between consecutive token starts (camera: 1)
    tokens: int  # tokens per window
    per_call: int = 1  # tokens one encoder call yields

    FIELDS = ("span", "hop", "tokens", "per_call")

    def __post_init__(self):
        for key in self.FIELDS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"token layout {self.modality!r}: {key} must be an integer >= 1, got {value!r}")
        if self.tokens % self.per_call:
            raise ConfigError(f"token layout {self.modality!r}: tokens ({self.tokens}) must be a multiple of "
                              f"per_call ({self.per_call})")

    @classmethod
    def from_dict(cls, modality: str, raw: dict[str, Any]) -> "TokenLayout":
        if not isinstance(raw, dict):
            raise ConfigError(f"token layout {modality!r}: expected a table of {list(cls.FIELDS)}, got {raw!r}")
        unknown = sorted(set(raw) - set(cls.FIELDS))
        missing = [k for k in cls.FIELDS[:3] if k not in raw]
        if unknown or missing:
            raise ConfigError(f"token layout {modality!r}: unknown keys {unknown}, missing keys {missing}",
                              hint=f"a layout has {list(cls.FIELDS)} (per_call defaults to 1)")
        return cls(modality, **raw)

    @property
    def slots(self) -> int:
        """Encoder calls per window: the token cache's slots."""
        return self.tokens // self.per_call

    def check_fits(self, sensor: SensorSpec, window: WindowSpec) -> None:
        """The layout's tokens lie inside one window of `sensor` (a camera window is one frame)."""
        if sensor.kind == "camera":
            if (self.span, self.hop, self.slots) != (1, 1, 1):
                raise ConfigError(f"token layout {self.modality!r}: a camera token set is one frame "
                                  f"(span 1, hop 1, tokens == per_call), got {self}")
            return
        reach = (self.slots - 1) * self.hop + self.span
        if reach > window.samples(sensor):
            raise ConfigError(f"token layout {self.modality!r}: {self.slots} tokens of span {self.span}, hop "
                              f"{self.hop} reach {reach} samples, past the window's {window.samples(sensor)}")


class _Stream:
    """What both stream kinds share: the encoder call with its output check and counters."""

    def __init__(self, sensor: SensorSpec, layout: TokenLayout, encoder: Encoder, dim: int):
        self.sensor, self.layout, self.encoder, self.dim = sensor, layout, encoder, dim
        self.calls = 0  # encoder calls
        self.masked = 0  # spans not encoded: too little coverage or a gap (the saving)
        self.over_rate = 0  # camera frames arriving faster than the sensor rate, not encoded

    def _encode(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.encoder(x), dtype=np.float32)
        if out.shape != (self.layout.per_call, self.dim):
            raise BundleError(f"encoder for {self.sensor.name!r} returned shape {out.shape}, expected "
                              f"({self.layout.per_call}, {self.dim})", hint="the bundle's token layout and its "
                              "encoder graph disagree; re-export the bundle")
        self.calls += 1
        return out

    def _empty(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros((self.layout.slots, self.layout.per_call, self.dim), np.float32),  # (S, P, D)
                np.zeros((self.layout.slots, self.layout.per_call), np.float32))  # (S, P)


class SpanStream(_Stream):
    """imu / timeseries / audio tokens on a fixed grid: span j covers [origin + j*hop/rate, origin + (j*hop +
    span)/rate). A span is cut once its time has passed (`has_passed`, the assembler's rule) by `cut_window`
    with a window of the span's length (the newest `span` samples, oldest repeated in front when short, valid by
    the coverage and gap rules); only valid spans reach the encoder. Tokens are kept by grid index until no
    coming prediction can use them, at most `capacity` of them: a stream that far ahead of the prediction clock
    waits for it (a replay pushing minutes at once loses nothing). What is not there reads as a masked slot."""

    def __init__(self, sensor: SensorSpec, layout: TokenLayout, encoder: Encoder, dim: int, window: WindowSpec,
                 origin: float, jump_s: float, capacity: int):
        super().__init__(sensor, layout, encoder, dim)
        self.origin, self.jump_s, self.capacity = origin, jump_s, capacity
        rate = sensor.rate
        self._span = WindowSpec(length_s=layout.span / rate, hop_s=layout.hop / rate, min_coverage=window.min_coverage)
        self._window_s = window.samples(sensor) / rate  # the newest T samples before a window's end
        self.restart()

    def restart(self) -> None:
        """Forget everything (a discontinuity): the grid restarts at the next sample."""
        self._t = np.zeros(0, np.float64)
        self._x = np.zeros((0, *self.sensor.sample_shape), np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._tokens: dict[int, np.ndarray] = {}  # grid index -> (per_call, D), ascending: valid spans only
        self._j: int | None = None  # next span to cut; None until data arrives
        self.last = -math.inf  # newest sample time

    def span_start(self, j: int) -> float:
        return self.origin + j * self.layout.hop / self.sensor.rate

    def span_end(self, j: int) -> float:
        return self.origin + (j * self.layout.hop + self.layout.span) / self.sensor.rate

    def append(self, t: np.ndarray, x: np.ndarray) -> None:
        """A clean, in-order piece: t float64[n], x (n, *sample_shape)."""
        # First data, or the grid ran far ahead of it: another stream's bogus time moved `now` and this stream,
        # stale by that clock, skipped its empty spans up to there. (Far behind is a backlog: it is worked off.)
        if self._j is None or self.span_start(self._j) > t[0] + self.jump_s:
            self.restart()
            hops = ((t[0] - self.origin) * self.sensor.rate - self.layout.span) / self.layout.hop
            self._j = max(0, math.floor(hops))  # a span ending at or before t[0]: none holding data is skipped
        self._pending.append((t, x))
        self.last = float(t[-1])

    def advance(self, now: float, t_next: float) -> bool:
        """Cut the spans whose time has passed, at most MAX_SPANS_PER_CALL, keeping what the prediction at
        t_next and later ones need; True when more are ready. (A stream held back at `capacity` is more than
        every stale_after_s ahead of t_next, so that prediction is ready too: pop_ready never spins on it.)"""
        if self._j is None or (not self._passed(self._j, now) and len(self._pending) < 64):
            return False  # no span to cut (the common call): the samples wait in _pending, in a few pieces
        self._absorb()
        keep_from = self.window_slots(t_next)[0]
        while self._tokens and next(iter(self._tokens)) < keep_from:
            del self._tokens[next(iter(self._tokens))]
        for _ in range(MAX_SPANS_PER_CALL):
            if not self._passed(self._j, now) or len(self._tokens) >= self.capacity:
                break
            if self.last < self.span_start(self._j):
                self._skip_empty(now)
            else:
                self._cut(self._j)
        self._trim()
        return self._passed(self._j, now)

    def _passed(self, j: int, now: float) -> bool:
        end = self.span_end(j)
        return now >= end and has_passed(end, self.last, now, self.sensor.stale_after_s)

    def _cut(self, j: int) -> None:
        x, valid = cut_window(self.sensor, self._span, self._t, self._x, self.span_end(j))  # (C, span) | (span,)
        if valid:
            self._tokens[j] = self._encode(x)
        else:
            self.masked += 1
        self._j = j + 1

    def _skip_empty(self, now: float) -> None:
        """The stream went stale before span j began: every span up to the first one not yet passed is empty,
        masked without a cut (a dead sensor costs O(1) per call, whatever the gap)."""
        stale_end = now - self.sensor.stale_after_s  # spans ending before this have passed
        hops = ((stale_end - self.origin) * self.sensor.rate - self.layout.span) / self.layout.hop
        j_next = max(self._j + 1, math.ceil(hops))
        self.masked += j_next - self._j
        self._j = j_next

    def _absorb(self) -> None:
        if self._pending:
            self._t = np.concatenate([self._t, *(t for t, _ in self._pending)])
            self._x = np.concatenate([self._x, *(np.asarray(x, np.float32) for _, x in self._pending)])
            self._pending.clear()

    def _trim(self) -> None:
        # Samples before the next span's start can never be used again.
        i = int(np.searchsorted(self._t, self.span_start(self._j), side="left"))
        if i:
            self._t, self._x = self._t[i:], self._x[i:]

    def window_slots(self, t_end: float) -> range:
        """Grid indices of the window ending at t_end, oldest first. Anchored at the window's first sample
        (t_end - T/rate) rounded down onto this grid: exact when it lies on the grid, else up to one hop early."""
        hops = (t_end - self._window_s - self.origin) * self.sensor.rate / self.layout.hop
        j0 = math.floor(hops + _GRID_SLACK)
        return range(j0, j0 + self.layout.slots)

    def caught_up(self, t_end: float) -> bool:
        """Every span of the window ending at t_end has been cut (or can no longer get data)."""
        return self._j is None or self._j > self.window_slots(t_end)[-1]

    def snapshot(self, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (N, D), mask (N,)) of the window ending at t_end; missing slots are zeros with mask 0."""
        tokens, mask = self._empty()  # (S, P, D), (S, P)
        for i, j in enumerate(self.window_slots(t_end)):
            if j in self._tokens:
                tokens[i], mask[i] = self._tokens[j], 1.0
        return tokens.reshape(-1, self.dim), mask.reshape(-1)

    def buffered(self) -> int:
        return len(self._t) + sum(len(t) for t, _ in self._pending)

    def cached(self) -> int:
        return len(self._tokens)


class FrameStream(_Stream):
    """Camera: each arriving frame is encoded at once (at most at the sensor rate: a frame under half a period
    after the last encoded one is skipped, counted in `over_rate`); frames' tokens are kept while a coming
    prediction may use them, at most `capacity` (then encoding waits for the prediction clock). A window ending
    at t_end takes the newest frame before it, valid while at most stale_after_s old (`cut_window`'s rule)."""

    def __init__(self, sensor: SensorSpec, layout: TokenLayout, encoder: Encoder, dim: int, window: WindowSpec,
                 capacity: int):
        super().__init__(sensor, layout, encoder, dim)
        self.length_s, self.capacity = window.length_s, capacity
        self.restart()

    def restart(self) -> None:
        self._pending: deque = deque()  # (t, frame (H, W, 3)) not yet encoded
        self._times: deque = deque()  # encoded frames' times, ascending
        self._tokens: deque = deque()  # their tokens, (per_call, D) each
        self.last = -math.inf

    def append(self, t: np.ndarray, x: np.ndarray) -> None:
        self._pending.extend(zip(t.tolist(), x))
        self.last = float(t[-1])

    def advance(self, now: float, t_next: float) -> bool:
        """Encode pending frames, at most MAX_SPANS_PER_CALL, keeping the newest before t_next; True when more wait."""
        while len(self._times) > 1 and self._times[1] < t_next:  # the oldest is no prediction's newest frame
            self._times.popleft()
            self._tokens.popleft()
        for _ in range(min(MAX_SPANS_PER_CALL, len(self._pending))):
            if len(self._times) >= self.capacity:
                break
            t, frame = self._pending.popleft()
            if self._times and t - self._times[-1] < 0.5 / self.sensor.rate:
                self.over_rate += 1
                continue
            chw = np.ascontiguousarray(np.transpose(frame, (2, 0, 1)), dtype=np.float32)  # (H, W, 3) -> (3, H, W)
            self._tokens.append(self._encode(chw))
            self._times.append(t)
        return bool(self._pending)

    def caught_up(self, t_end: float) -> bool:
        return not self._pending or self._pending[0][0] >= t_end

    def snapshot(self, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        tokens, mask = self._empty()  # (1, P, D), (1, P)
        i = int(np.searchsorted(np.asarray(self._times), t_end, side="left")) - 1  # newest frame before t_end
        if i >= 0 and t_end - self.length_s <= self._times[i] and t_end - self._times[i] <= self.sensor.stale_after_s:
            tokens[0], mask[0] = self._tokens[i], 1.0
        return tokens.reshape(-1, self.dim), mask.reshape(-1)

    def buffered(self) -> int:
        return len(self._pending)

    def cached(self) -> int:
        return len(self._tokens)
