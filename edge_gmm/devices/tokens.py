"""The device's token cache: per-modality token streams and a prediction clock for the fusion graph (numpy only).

Each modality's encoder runs once per new token at its sensor's rate (devices/token_streams.py); predictions
run at any `rate` on their own grid t_pred = origin + k / rate, each a snapshot of the last window's tokens with
a per-token mask, so a sensor that drops out for 0.3 s masks those tokens only. Encoders are plain callables
(one span in model layout -> (per_call, D)): ONNX Runtime or TensorRT sessions, or a numpy map in tests.

Alignment. A snapshot at t_pred holds, per modality, the tokens of the window ending at t_pred (the newest
T = window.samples(sensor) samples before it), oldest first: its slot i is token grid index j0 + i, where j0's
span starts at the window's first sample rounded down onto the modality's token grid. On the common grid (t_pred
- T/rate on every modality's token grid, e.g. every whole-window end when the window hop is a multiple of every
token hop) a snapshot equals encoding the whole window's spans exactly; elsewhere the fusion sees tokens shifted
earlier by less than one token hop, every one of them ending by t_pred. A slot is 1 only if its span was valid
(cut_window's coverage and gap rules on the span); a camera's slots are its newest frame before t_pred, valid
while at most stale_after_s old.

Clock and bad times: the rules of windowing.StreamingAssembler, through the same helpers. A prediction is ready
when every stream has passed t_pred or is stale past it (`has_passed`) and has cut its spans up to there.
Non-finite times are dropped (`invalid`), out-of-order samples too (`dropped`), and a jump of more than `jump_s`
is a discontinuity: the predictions its data before the jump completes are cut first (handed out by the next
`pop_ready`), then that stream's tokens are cleared and its grid restarts at the new time (the prediction grid
moves there too when it is that far from the data). `pop_ready` does bounded work: each stream cuts at most
MAX_SPANS_PER_CALL spans, at most MAX_WINDOWS_PER_CALL predictions come out; `backlog` says more are ready.
`flush()`, once the input has ended, cuts what is left up to the data's end (the assembler's flush rule).
Identity with whole windows holds, as for the assembler, while every sample is pushed before the newest sample
of any stream is more than its stale_after_s ahead of it (a live source does; a replay in time order does).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from edge_gmm.config import SensorSpec, WindowSpec
from edge_gmm.data.format import SensorChunk
from edge_gmm.data.windowing import (_EPS, JUMP_WINDOWS, MAX_WINDOWS_PER_CALL, chunk_pieces, covered_until, first_k,
                                     has_passed, in_order, is_jump)
from edge_gmm.devices.token_streams import Encoder, FrameStream, SpanStream, TokenLayout
from edge_gmm.errors import ConfigError

log = logging.getLogger(__name__)

Stream = Union[SpanStream, FrameStream]


@dataclass
class Snapshot:
    """The fusion graph's input at time t: per modality tokens float32 (N_m, D), oldest first, and mask float32 (N_m,)."""

    t: float
    tokens: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]


class TokenCache:
    """Token streams of `sensors` (each with a TokenLayout and an encoder) and predictions at `rate` Hz."""

    def __init__(self, sensors: list[SensorSpec], window: WindowSpec, layouts: dict[str, TokenLayout],
                 encoders: dict[str, Encoder], dim: int, rate: float, origin: float = 0.0):
        if not 0 < rate < math.inf:
            raise ConfigError(f"prediction rate must be > 0 Hz and finite, got {rate}")
        for s in sensors:
            if s.name not in layouts or s.name not in encoders:
                raise ConfigError(f"modality {s.name!r} has no token layout or no encoder",
                                  hint="the bundle's streaming graphs must cover every sensor it runs")
            layouts[s.name].check_fits(s, window)
        self.sensors, self.window, self.rate, self.origin = list(sensors), window, float(rate), float(origin)
        stale = max((s.stale_after_s for s in self.sensors), default=0.0)
        self.jump_s = JUMP_WINDOWS * window.length_s + stale
        self.streams = {s.name: self._stream(s, layouts[s.name], encoders[s.name], dim, stale + window.length_s)
                        for s in self.sensors}
        self._k0 = first_k(WindowSpec(length_s=window.length_s, hop_s=1.0 / self.rate))  # first window after the origin
        self._k = self._k0  # next prediction
        self.dropped = {s.name: 0 for s in self.sensors}
        self.invalid = {s.name: 0 for s in self.sensors}  # samples with a NaN or infinite time
        self.discontinuities = {s.name: 0 for s in self.sensors}
        self.backlog = False  # the last pop_ready left spans or predictions ready
        self._early: list[Snapshot] = []  # predictions cut before a discontinuity, for the next pop_ready

    def _stream(self, sensor: SensorSpec, layout: TokenLayout, encoder: Encoder, dim: int, lag_s: float) -> Stream:
        """A stream holding at most one window plus `lag_s` of tokens: how far it may run ahead of the prediction
        clock (a missing sensor holds predictions back by its stale_after_s) before its encoding waits."""
        if sensor.kind == "camera":
            return FrameStream(sensor, layout, encoder, dim, self.window, math.ceil(lag_s * sensor.rate) + 2)
        capacity = layout.slots + math.ceil(lag_s * sensor.rate / layout.hop) + 1
        return SpanStream(sensor, layout, encoder, dim, self.window, self.origin, self.jump_s, capacity)

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.sensors]

    @property
    def now(self) -> float:
        return max(st.last for st in self.streams.values())

    def t_pred(self, k: int) -> float:
        return self.origin + k / self.rate

    # ------------------------------------------------------------ input

    def push(self, chunk: SensorChunk) -> None:
        """Buffer one chunk (host clock); the work happens in pop_ready."""
        for t, x in chunk_pieces(chunk, self.modalities, self.jump_s, self.invalid):
            self._push_piece(chunk.modality, t, x)

    def _push_piece(self, m: str, t: np.ndarray, x: np.ndarray) -> None:
        stream = self.streams[m]
        first = self.now == -math.inf  # no data yet: a start far from the origin is where the grid begins
        jumped = not first and is_jump(float(t[0]), stream.last, max(self.now, self.t_pred(self._k)), self.jump_s)
        if jumped:
            self._restart(m, float(t[0]))
        keep = in_order(t, stream.last)
        if not keep.all():
            self.dropped[m] += int((~keep).sum())
            if not keep.any():
                return
            t, x = t[keep], x[keep]
        stream.append(t, x)
        if jumped or first:
            self._resync(float(t[0]))

    def _restart(self, m: str, t_new: float) -> None:
        self.discontinuities[m] += 1
        level = logging.WARNING if self.discontinuities[m] == 1 else logging.DEBUG
        log.log(level, "%s: time jumps from %.3f to %.3f s; a discontinuity (counted), its tokens restart there",
                m, self.streams[m].last, t_new)
        self._close_out(m)
        self.streams[m].restart()

    def _close_out(self, m: str) -> None:
        """Before `m` restarts: the predictions its data before the jump completes (up to its newest sample plus one
        period, at most MAX_WINDOWS_PER_CALL), as the assembler cuts those windows; not when that data was itself
        the outlier (a bogus chunk far ahead of every other stream)."""
        last = self.streams[m].last
        others = max((st.last for k, st in self.streams.items() if k != m), default=-math.inf)
        if others > -math.inf and last > others + self.jump_s:
            return
        until = covered_until(self.streams[m].sensor, last) + _EPS
        for _ in range(MAX_WINDOWS_PER_CALL):  # bounded: each pass cuts spans or predictions
            self._early += self._pop(until)
            if not self.backlog or len(self._early) >= MAX_WINDOWS_PER_CALL:
                return

    def _resync(self, t_new: float) -> None:
        """Move the prediction grid to the data when it is more than jump_s from the newest sample."""
        if abs(self.t_pred(self._k) - self.now) > self.jump_s:
            self._k = max(self._k0, math.floor((t_new - self.origin) * self.rate) + 1)

    # ------------------------------------------------------------ output

    def pop_ready(self) -> list[Snapshot]:
        """Encode what the streams completed, then the snapshots of every ready prediction time, oldest first."""
        early, self._early = self._early, []
        return early + self._pop(math.inf)

    def flush(self) -> list[Snapshot]:
        """After the last chunk: the predictions left that end by where the data ends (its newest sample plus one
        period: the assembler's flush rule), cut as if every stream had gone quiet. Call again while `backlog`."""
        early, self._early = self._early, []
        ends = [covered_until(st.sensor, st.last) for st in self.streams.values() if st.last > -math.inf]
        if not ends:
            self.backlog = False
            return early
        return early + self._pop(max(ends) + _EPS)

    def _pop(self, until: float) -> list[Snapshot]:
        """pop_ready (until = inf) or flush: each stream's clock then reads as stale just past `until`, so it cuts
        the spans ending by then, and predictions up to `until` come out."""
        final = until < math.inf
        now = until + max(s.stale_after_s for s in self.sensors) + _EPS if final else self.now
        t_next = self.t_pred(self._k)
        clock = (lambda st: until + st.sensor.stale_after_s) if final else (lambda st: now)
        more = [st.advance(clock(st), t_next) for st in self.streams.values()]  # not any(): every stream gets its turn
        out: list[Snapshot] = []
        while self._ready(self.t_pred(self._k), now, until) and len(out) < MAX_WINDOWS_PER_CALL:
            out.append(self.snapshot(self.t_pred(self._k)))
            self._k += 1
        self.backlog = any(more) or self._ready(self.t_pred(self._k), now, until)
        return out

    def _ready(self, t: float, now: float, until: float = math.inf) -> bool:
        return t <= until and now >= t and all(has_passed(t, st.last, now, st.sensor.stale_after_s) and st.caught_up(t)
                                               for st in self.streams.values())

    def snapshot(self, t_pred: float) -> Snapshot:
        """The tokens and per-token masks of the window ending at t_pred, from what the streams hold now."""
        parts = {m: st.snapshot(t_pred) for m, st in self.streams.items()}
        return Snapshot(t_pred, {m: p[0] for m, p in parts.items()}, {m: p[1] for m, p in parts.items()})

    # ------------------------------------------------------------ metrics

    def buffered(self) -> dict[str, int]:
        """Raw samples (camera: frames not yet encoded) held per modality: about one span once cut."""
        return {m: st.buffered() for m, st in self.streams.items()}

    def cached(self) -> dict[str, int]:
        """Token sets held per modality: bounded by the stream's capacity (a window plus the lag it allows)."""
        return {m: st.cached() for m, st in self.streams.items()}

    def counts(self) -> dict[str, dict[str, int]]:
        """Work done and input thrown away, per modality (for the loop's metrics)."""
        per = self.streams.items()
        return {"tokens_encoded": {m: st.calls * st.layout.per_call for m, st in per},
                "encoder_calls": {m: st.calls for m, st in per},
                "spans_masked": {m: st.masked for m, st in per},
                "frames_over_rate": {m: st.over_rate for m, st in per},
                "discontinuities": dict(self.discontinuities), "invalid_times": dict(self.invalid),
                "out_of_order": dict(self.dropped)}
