"""Sessions -> aligned fixed-shape windows, offline (training) and streaming (device), numpy only.

Rules (docs/dataset-format.md, "Windowing"), shared by both paths through `cut_window`:
- Window k covers [end - length_s, end) with end = origin + k * hop_s (origin = session start = 0.0 on a
  dataset's clock); the first window is the first whose start is >= origin, the last ends at or before the
  newest sample plus one sample period (a 100-sample series at 10 Hz is one 10 s window). Ends on this
  fixed grid are what lets the streaming assembler reproduce them.
- imu / timeseries / audio: the newest T = window.samples(sensor) samples in the window, oldest first; when
  fewer arrived, the oldest is repeated in front. No resampling: clock offsets between sensors stay as
  recorded. Present (mask 1) when (n + 1) / T >= min_coverage (one sample of slack for the edges) and no
  gap (window edges included) exceeds the sensor's stale_after_s.
- camera: the newest frame in the window, present when it is at most stale_after_s older than the end.
- A masked modality contributes zeros.
- Labels (classification): a session label covers every window; where a task has segments, `majority`
  takes the label overlapping the window longest (ties: lower label index) if it covers at least half the
  window, `center` the label at the window's center; otherwise -1. Regression: float32, NaN = unlabeled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Dataset, SensorChunk, Session
from edge_gmm.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Windows:
    """W windows. inputs[m]: imu/timeseries [W, C, T], audio [W, N], camera [W, 3, H, W] (float32);
    mask: float32[W, M] in `modalities` order; labels[task]: int64[W] (-1 = none) or float32[W] (NaN = none)."""

    inputs: dict[str, np.ndarray]
    mask: np.ndarray
    labels: dict[str, np.ndarray]
    t_end: np.ndarray
    session: list[str]
    modalities: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.t_end.shape[0])

    def select(self, idx) -> "Windows":
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Windows(
            {k: v[idx] for k, v in self.inputs.items()},
            self.mask[idx],
            {k: v[idx] for k, v in self.labels.items()},
            self.t_end[idx],
            [self.session[i] for i in idx],
            list(self.modalities),
        )

    @staticmethod
    def concat(parts: list["Windows"]) -> "Windows":
        if not parts:
            raise DataError("no windows to concatenate")
        first = parts[0]
        return Windows(
            {k: np.concatenate([p.inputs[k] for p in parts]) for k in first.inputs},
            np.concatenate([p.mask for p in parts]),
            {k: np.concatenate([p.labels[k] for p in parts]) for k in first.labels},
            np.concatenate([p.t_end for p in parts]),
            [s for p in parts for s in p.session],
            list(first.modalities),
        )


def model_shape(sensor: SensorSpec, window: WindowSpec) -> tuple[int, ...]:
    """One window of one modality in model layout (no batch dim)."""
    if sensor.kind == "camera":
        return (3, sensor.height, sensor.width)
    if sensor.kind == "audio":
        return (window.samples(sensor),)
    return (sensor.channels, window.samples(sensor))


def first_k(window: WindowSpec) -> int:
    """Index of the first grid window whose start is not before the origin."""
    return int(math.ceil(window.length_s / window.hop_s - 1e-9))


def window_end(origin: float, k: int, window: WindowSpec) -> float:
    # One formula for both paths: the streaming assembler must land on the same float64 values.
    return origin + k * window.hop_s


_EPS = 1e-6  # seconds: float slack when comparing a window end with where the data ends


def covered_until(sensor: SensorSpec, last_t: float) -> float:
    """A stream's data reaches one sample period past its last sample (a 100-sample series at 10 Hz covers [0, 10))."""
    return float(last_t) + 1.0 / sensor.rate


def cut_window(sensor: SensorSpec, window: WindowSpec, t: np.ndarray, x: np.ndarray, end: float) -> tuple[np.ndarray, bool]:
    """The window ending at `end` from one stream (t sorted): (value in model layout, present)."""
    start = end - window.length_s
    i0 = int(np.searchsorted(t, start, side="left"))
    i1 = int(np.searchsorted(t, end, side="left"))
    n = i1 - i0
    if sensor.kind == "camera":
        present = n > 0 and (end - t[i1 - 1]) <= sensor.stale_after_s
        if not present:
            return np.zeros(model_shape(sensor, window), np.float32), False
        return np.ascontiguousarray(np.transpose(x[i1 - 1], (2, 0, 1)), dtype=np.float32), True  # (H,W,3) -> (3,H,W)
    T = window.samples(sensor)
    # One sample of slack: jitter and clock offsets move one sample across a window edge without any loss.
    present = n > 0 and (n + 1) / T >= window.min_coverage
    if present:
        edges = np.concatenate(([start], t[i0:i1], [end]))
        present = float(np.max(np.diff(edges))) <= sensor.stale_after_s
    if not present:
        return np.zeros(model_shape(sensor, window), np.float32), False
    seg = x[max(i0, i1 - T) : i1]  # newest T samples, oldest first: (n', *sample_shape)
    if seg.shape[0] < T:
        seg = np.concatenate([np.repeat(seg[:1], T - seg.shape[0], axis=0), seg])
    seg = np.asarray(seg, dtype=np.float32)
    return (np.ascontiguousarray(seg) if sensor.kind == "audio" else np.ascontiguousarray(seg.T)), True  # [T] or [C, T]


# ---------------------------------------------------------------- offline


def window_session(session: Session, sensors: list[SensorSpec], window: WindowSpec, tasks: list[TaskSpec] | None = None, origin: float = 0.0) -> Windows:
    """All grid windows of one session, for `sensors` (mask columns in that order)."""
    tasks = tasks or []
    covered = [covered_until(s, session.streams[s.name].t[-1]) for s in sensors if s.name in session.streams and len(session.streams[s.name])]
    ends = []
    if covered:
        k = first_k(window)
        while (e := window_end(origin, k, window)) <= max(covered) + _EPS:
            ends.append(e)
            k += 1
    W = len(ends)
    inputs = {s.name: np.zeros((W, *model_shape(s, window)), np.float32) for s in sensors}
    mask = np.zeros((W, len(sensors)), np.float32)
    for j, s in enumerate(sensors):
        st = session.streams.get(s.name)
        if st is None or not len(st):
            continue
        t = np.asarray(st.t)
        for i, e in enumerate(ends):
            inputs[s.name][i], ok = cut_window(s, window, t, st.x, e)
            mask[i, j] = float(ok)
    t_end = np.asarray(ends, dtype=np.float64)
    labels = {task.name: window_labels(session, task, window, t_end) for task in tasks}
    return Windows(inputs, mask, labels, t_end, [session.id] * W, [s.name for s in sensors])


def window_labels(session: Session, task: TaskSpec, window: WindowSpec, t_end: np.ndarray) -> np.ndarray:
    """Labels of windows ending at t_end, by the module's overlap rule."""
    regression = task.type == "regression"
    none = np.nan if regression else -1

    def encode(label: Any):
        if regression:
            return float(label)
        return task.labels.index(str(label)) if str(label) in task.labels else -1

    out = np.full(t_end.shape[0], none, dtype=np.float32 if regression else np.int64)
    segs = [s for s in session.segments if s.task == task.name]
    if not segs:
        if task.name in session.labels:
            out[:] = encode(session.labels[task.name])
        return out
    L = window.length_s
    for i, end in enumerate(t_end):
        start = end - L
        if window.label_rule == "center":
            c = end - L / 2
            hit = next((s for s in segs if s.start <= c < s.end), None)
            out[i] = encode(hit.label) if hit is not None else none
            continue
        overlap: dict[Any, float] = {}
        for s in segs:
            ov = min(end, s.end) - max(start, s.start)
            if ov > 0:
                overlap[s.label] = overlap.get(s.label, 0.0) + ov
        if not overlap or sum(overlap.values()) < L / 2:
            continue
        if regression:  # overlap-weighted mean of the covering values
            out[i] = sum(float(k) * v for k, v in overlap.items()) / sum(overlap.values())
            continue
        best = max(overlap.items(), key=lambda kv: (kv[1], -encode(kv[0])))
        if best[1] >= L / 2:
            out[i] = encode(best[0])
    return out


def make_windows(
    dataset: Dataset,
    split: str | None,
    window: WindowSpec | None = None,
    modalities: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    drop_empty: bool = True,
) -> Windows:
    """Windows of every session of a split (None = all). `window` defaults to the dataset's recommended one.
    `drop_empty` leaves out windows where every selected modality is masked (they carry no input)."""
    window = window or dataset.window or WindowSpec()
    names = list(modalities) if modalities else [s.name for s in dataset.sensors]
    for n in names:
        dataset.sensor(n)
    sensors = [s for s in dataset.sensors if s.name in names]  # mask columns in the dataset's order
    task_specs = [dataset.task(n) for n in tasks] if tasks else list(dataset.tasks)
    parts = []
    for sid in dataset.session_ids(split):
        w = window_session(dataset.load_session(sid, [s.name for s in sensors]), sensors, window, task_specs)
        if drop_empty and len(w):
            w = w.select(w.mask.sum(axis=1) > 0)
        parts.append(w)
    if not parts:
        return _empty(sensors, window, task_specs)
    return Windows.concat(parts)


def _empty(sensors, window, tasks) -> Windows:
    return Windows(
        {s.name: np.zeros((0, *model_shape(s, window)), np.float32) for s in sensors},
        np.zeros((0, len(sensors)), np.float32),
        {t.name: np.zeros(0, np.float32 if t.type == "regression" else np.int64) for t in tasks},
        np.zeros(0),
        [],
        [s.name for s in sensors],
    )


# ---------------------------------------------------------------- streaming

MAX_WINDOWS_PER_CALL = 64  # pop_ready's bound on work and memory per call (64 camera+audio windows ~ 11 MB)
JUMP_WINDOWS = 4  # window lengths (plus the longest stale timeout) beyond which a time jump is a discontinuity


# Bad-time defences, shared by StreamingAssembler and the device's token cache (devices/tokens.py).


def time_pieces(t: np.ndarray, jump_s: float) -> tuple[list, int]:
    """One chunk's times -> (indices (index arrays or a slice) of its finite samples, split where the time jumps
    by more than jump_s, how many non-finite times were left out). A time of inf would move the grid without
    end; a jump inside one chunk is as much a discontinuity as one between chunks, so the caller takes the
    pieces in turn."""
    if np.isfinite(t).all() and (t.size < 2 or np.abs(np.diff(t)).max() <= jump_s):
        return [slice(0, t.size)], 0  # the common chunk in one piece (np.split costs ~20 us a chunk)
    finite = np.flatnonzero(np.isfinite(t))
    if not finite.size:
        return [], int(t.size)
    cuts = np.flatnonzero(np.abs(np.diff(t[finite])) > jump_s) + 1
    return np.split(finite, cuts), int(t.size - finite.size)


def chunk_pieces(chunk: SensorChunk, modalities: list[str], jump_s: float,
                 invalid: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """A chunk of one of `modalities` as (t float64, x) pieces of finite times (`time_pieces`), its non-finite
    times counted in invalid[modality]; DataError for an unknown modality."""
    m = chunk.modality
    if m not in modalities:
        raise DataError(f"chunk for unknown modality {m!r}; expected one of {modalities}")
    t, x = np.asarray(chunk.t, dtype=np.float64), np.asarray(chunk.x)
    pieces, n_invalid = time_pieces(t, jump_s)
    invalid[m] += n_invalid
    return [(t[p], x[p]) for p in pieces]


def is_jump(t0: float, last: float, ahead: float, jump_s: float) -> bool:
    """A piece starting at t0 is a discontinuity: more than jump_s ahead of `ahead` (every stream and the grid)
    or behind its own stream's newest sample `last`."""
    return t0 > ahead + jump_s or t0 < last - jump_s


def has_passed(end: float, last: float, now: float, stale_after_s: float) -> bool:
    """A stream's clock has passed `end`: its newest sample `last` is at or after it, or the newest sample of any
    stream (`now`) is more than stale_after_s past it (the stream is stale; what it delivered is all there is)."""
    return last >= end or now - end > stale_after_s


def in_order(t: np.ndarray, last: float) -> np.ndarray:
    """Samples that can still be placed (bool[n]): out of order ones, behind the stream's newest `last` or an
    earlier sample of this chunk, cannot."""
    return (t >= last) & (t >= np.maximum.accumulate(t))


class StreamingAssembler:
    """Builds the same windows as `window_session` from chunks as they arrive.

    A window is emitted once every stream's clock has passed its end: a sample at or after the end arrived,
    or the newest sample of any stream is more than the stream's stale_after_s past the end (the stream is
    stale; whatever it delivered for the window is used, so it is masked by the usual rules). A missing
    sensor therefore delays windows by its stale_after_s, and never stops them.
    Identity with offline windowing holds when every sample is pushed before the newest sample of any stream
    is more than stale_after_s ahead of it (a live source does; a replay delivering in time order does).
    Samples older than a stream's newest are dropped (counted in `dropped`). `flush()` emits what is left
    once the input has ended.

    Bad times cannot stall or swamp it. Non-finite times are dropped (`invalid`). A jump of more than
    `jump_s` (JUMP_WINDOWS window lengths plus the longest stale timeout) is a discontinuity (counted in
    `discontinuities`, logged once per modality): forward, when a stream's samples land that far ahead of
    every stream and of the grid; backward, when they land that far behind the stream's own newest. The
    windows its data before the jump completes are cut first (handed out by the next `pop_ready`), then its
    buffer is dropped, it restarts at the new time, and if the grid is that far from the newest sample it moves
    there, skipping the windows in between (the stream reads as stale in the first windows after).
    `pop_ready` cuts at most MAX_WINDOWS_PER_CALL windows; `backlog` says more are ready.
    """

    def __init__(self, sensors: list[SensorSpec], window: WindowSpec, origin: float = 0.0):
        self.sensors = list(sensors)
        self.window = window
        self.origin = float(origin)
        self.jump_s = JUMP_WINDOWS * window.length_s + max((s.stale_after_s for s in self.sensors), default=0.0)
        self._k = first_k(window)
        self._t = {s.name: np.zeros(0, np.float64) for s in self.sensors}
        self._x = {s.name: np.zeros((0, *s.sample_shape), np.float32) for s in self.sensors}
        self._pending: dict[str, list[SensorChunk]] = {s.name: [] for s in self.sensors}
        self._last = {s.name: -math.inf for s in self.sensors}
        self.dropped = {s.name: 0 for s in self.sensors}
        self.invalid = {s.name: 0 for s in self.sensors}  # samples with a NaN or infinite time
        self.discontinuities = {s.name: 0 for s in self.sensors}
        self.backlog = False  # the last pop_ready stopped at MAX_WINDOWS_PER_CALL with more windows ready
        self._spec = {s.name: s for s in self.sensors}
        self._early: list = []  # windows cut before a discontinuity, for the next pop_ready

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.sensors]

    @property
    def now(self) -> float:
        return max(self._last.values())

    def buffered(self) -> dict[str, int]:
        """Samples held per modality (bounded by about a window once the grid follows the data)."""
        return {m: len(self._t[m]) + sum(len(c) for c in self._pending[m]) for m in self._t}

    def counts(self) -> dict[str, dict[str, int]]:
        """What the assembler threw away, per modality (for the loop's metrics)."""
        return {"discontinuities": dict(self.discontinuities), "invalid_times": dict(self.invalid),
                "out_of_order": dict(self.dropped)}

    def push(self, chunk: SensorChunk) -> None:
        for t, x in chunk_pieces(chunk, self.modalities, self.jump_s, self.invalid):
            self._push_piece(chunk.modality, t, x)

    def _push_piece(self, m: str, t: np.ndarray, x: np.ndarray) -> None:
        first = self.now == -math.inf  # no data yet: a start far from the origin is where the grid begins
        ahead = max(self.now, window_end(self.origin, self._k, self.window))
        jumped = not first and is_jump(float(t[0]), self._last[m], ahead, self.jump_s)
        if jumped:
            self._restart(m, float(t[0]))
        keep = in_order(t, self._last[m])
        if not keep.all():
            self.dropped[m] += int((~keep).sum())
            if not keep.any():
                return
            t, x = t[keep], x[keep]
        self._pending[m].append(SensorChunk(m, t, x))
        self._last[m] = float(t[-1])
        if jumped or first:
            self._resync(float(t[0]))

    def _restart(self, m: str, t_new: float) -> None:
        """Modality `m` jumped to `t_new`: what it buffered cannot share a window with what follows, so the
        windows it completes are cut now (at most MAX_WINDOWS_PER_CALL), then it starts afresh."""
        self.discontinuities[m] += 1
        level = logging.WARNING if self.discontinuities[m] == 1 else logging.DEBUG
        log.log(level, "%s: time jumps from %.3f to %.3f s; a discontinuity (counted), its stream restarts there",
                m, self._last[m], t_new)
        self._close_out(m)
        self._t[m] = self._t[m][:0]
        self._x[m] = self._x[m][:0]
        self._pending[m].clear()
        self._last[m] = -math.inf

    def _close_out(self, m: str) -> None:
        """Cut the windows `m`'s data before its jump completes, unless that data was itself the outlier (a
        bogus chunk far ahead of every other stream): those windows would carry times 36 minutes away."""
        self._absorb()
        others = max((v for k, v in self._last.items() if k != m), default=-math.inf)
        if others > -math.inf and self._last[m] > others + self.jump_s:
            return
        limit = covered_until(self._spec[m], self._last[m]) + _EPS
        while len(self._early) < MAX_WINDOWS_PER_CALL:
            end = window_end(self.origin, self._k, self.window)
            if end > limit:
                return
            self._early.append(self._cut(end))

    def _resync(self, t_new: float) -> None:
        """Move the grid to the data when a discontinuity left it more than jump_s from the newest sample."""
        if abs(window_end(self.origin, self._k, self.window) - self.now) > self.jump_s:
            self._k = max(first_k(self.window), math.floor((t_new - self.origin) / self.window.hop_s) + 1)

    def pop_ready(self) -> list[tuple[float, dict[str, np.ndarray], np.ndarray]]:
        """Windows whose inputs are complete: (t_end, {modality: array in model layout}, mask float32[M]).
        At most MAX_WINDOWS_PER_CALL; when `backlog` is then True, call again for the rest."""
        return self._emit(final=False)

    def flush(self) -> list[tuple[float, dict[str, np.ndarray], np.ndarray]]:
        """After the last chunk: every remaining window that ends at or before the newest sample + one period."""
        return self._emit(final=True)

    def _covered(self) -> float:
        return max((covered_until(s, last) for s, last in zip(self.sensors, self._last.values())), default=-math.inf)

    def _ready(self, end: float) -> bool:
        now = self.now
        if now < end:
            return False
        return all(has_passed(end, last, now, s.stale_after_s) for s, last in zip(self.sensors, self._last.values()))

    def _emit(self, final: bool):
        out, self._early = self._early, []
        self._absorb()
        self.backlog = False
        while True:
            end = window_end(self.origin, self._k, self.window)
            if not (self._covered() + _EPS >= end if final else self._ready(end)):
                break
            if not final and len(out) >= MAX_WINDOWS_PER_CALL:
                self.backlog = True
                break
            out.append(self._cut(end))
        self._trim()
        return out

    def _cut(self, end: float):
        """The grid window ending at `end` (the next one): (end, inputs, mask); the grid moves on."""
        inputs, mask = {}, np.zeros(len(self.sensors), np.float32)
        for j, s in enumerate(self.sensors):
            inputs[s.name], ok = cut_window(s, self.window, self._t[s.name], self._x[s.name], end)
            mask[j] = float(ok)
        self._k += 1
        return end, inputs, mask

    def _absorb(self) -> None:
        for name, chunks in self._pending.items():
            if chunks:
                self._t[name] = np.concatenate([self._t[name], *(np.asarray(c.t, np.float64) for c in chunks)])
                self._x[name] = np.concatenate([self._x[name], *(np.asarray(c.x, np.float32) for c in chunks)])
                chunks.clear()

    def _trim(self) -> None:
        # Samples before the next window's start can never be used again.
        start = window_end(self.origin, self._k, self.window) - self.window.length_s
        for name in self._t:
            i = int(np.searchsorted(self._t[name], start, side="left"))
            if i:
                self._t[name] = self._t[name][i:]
                self._x[name] = self._x[name][i:]
