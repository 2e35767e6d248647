"""Sources that play sessions: `replay://DATASET` (recorded) and `synth://SCENARIO` (simulated, live).

Both cut each session into slices of `CHUNK_S` seconds of data and stamp the samples on the host clock
(`t_host = t_data + offset`, one offset per session so consecutive sessions follow each other). Pacing:
a slice ending at data time `te` is emitted `(te - t_first) / speed` seconds after the start; at
`--speed max` nothing waits and the source is lossless (the loop blocks it instead of dropping windows).
At a speed other than 1 the stamps run on the data's time scale, not the wall clock: that keeps every
sensor's rate, so windows come out as in training.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Iterator

import numpy as np

from edge_gmm.errors import ConfigError, DataError
from edge_gmm.devices.sources import SOURCES, Source

CHUNK_S = 0.05  # data seconds per slice: small enough to look live, large enough to keep Python overhead low
OFFSET_GRAIN_S = 1.0 / 64  # offsets are multiples of this binary fraction: the window grid stays exact floats
SESSION_GAP_S = 0.0  # host-time gap between consecutive sessions


class _Player(Source):
    """Plays the sessions that `_sessions()` yields, in order."""

    reconnects = False

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lossless = math.isinf(self.speed)
        self.paced = not self.lossless
        self.sessions_played = 0
        self.offsets: collections.deque = collections.deque(maxlen=64)  # (session id, offset): the latest few

    def _sessions(self) -> Iterator:
        raise NotImplementedError

    def _place(self, earliest: float) -> float:
        """The offset for the next session: not before `earliest`, on the window grid when the hop is known.

        Sessions start at 0.0 on their own clock (dataset format), and training cut their windows at
        k * hop from there; putting every session's 0.0 on the loop's grid reproduces those windows.
        """
        if self.origin is None:
            self.origin = math.ceil(earliest / OFFSET_GRAIN_S) * OFFSET_GRAIN_S
            return self.origin
        step = self.align_s or OFFSET_GRAIN_S
        return self.origin + math.ceil((earliest - self.origin) / step) * step

    def stream(self, stop: threading.Event):
        from edge_gmm.data.format import SensorChunk

        wall0 = time.monotonic()
        host0 = self.clock.now()
        next_host = host0  # host time at which the next session begins
        for session in self._sessions():
            streams = {m: session.streams[m] for m in self.sensors if m in session.streams}
            if not streams:
                continue
            first = min(float(s.t[0]) for s in streams.values() if len(s.t))
            last = max(float(s.t[-1]) for s in streams.values() if len(s.t))
            offset = self._place(next_host - first)
            self.offsets.append((session.id, offset))
            starts = {m: 0 for m in streams}
            edge = first
            while any(starts[m] < len(s.t) for m, s in streams.items()):
                # over a gap in the data in one step (stepping CHUNK_S through an hour, or past 1e20 where
                # edge + CHUNK_S == edge, would spin), and always past the next sample: every pass makes progress
                nxt = min(float(s.t[starts[m]]) for m, s in streams.items() if starts[m] < len(s.t))
                edge = max(edge + CHUNK_S, float(np.nextafter(nxt, math.inf)))
                chunks = []
                for m, s in streams.items():
                    stop_at = int(np.searchsorted(s.t, edge, side="left"))
                    if stop_at > starts[m]:
                        sl = slice(starts[m], stop_at)
                        chunks.append(SensorChunk(m, s.t[sl] + offset, s.x[sl]))
                        starts[m] = stop_at
                if self.paced:
                    due = wall0 + (edge + offset - host0) / self.speed
                    delay = due - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                if stop.is_set():
                    return
                yield from chunks
            self.sessions_played += 1
            next_host = last + offset + SESSION_GAP_S + 1.0 / max(sp.rate for sp in self.sensors.values())


@SOURCES.register("replay")
class ReplaySource(_Player):
    """`replay://DATASET[?session=ID&split=NAME&loop=1&modalities=a,b]`: a recorded dataset.

    Without `session`, plays the `split` (default: `test` when the dataset has one, else every session).
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from edge_gmm.data.format import Dataset

        self.dataset = Dataset.open(self.spec.target)  # DataError naming the path when it is not one
        have = {s.name: s for s in self.dataset.sensors}
        _check_specs(f"replay: dataset {self.dataset.name!r}", have, self.sensors)
        self.absent = [m for m in self.sensors if m not in have]  # the loop reports these as missing
        self.session_ids = self._pick_sessions()

    def _pick_sessions(self) -> list[str]:
        ids = self.spec.option("session")
        if ids:
            return ids.split(",")
        split = self.spec.option("split")
        if split is None:
            split = "test" if self.dataset.splits.get("test") else None
        if split is None:
            return [sid for name in self.dataset.splits for sid in self.dataset.session_ids(name)]
        if split not in self.dataset.splits:
            raise ConfigError(f"replay: dataset has no split {split!r}", hint=f"splits: {', '.join(self.dataset.splits)}")
        return list(self.dataset.session_ids(split))

    def _sessions(self):
        loops = math.inf if self.spec.flag("loop") else 1
        n = 0
        while n < loops and self.session_ids:
            for sid in self.session_ids:  # only the modalities this source feeds: a camera stream can be large
                yield self.dataset.load_session(sid, [m for m in self.sensors if m not in self.absent])
            n += 1


@SOURCES.register("synth")
class SynthSource(_Player):
    """`synth://SCENARIO[?label=L&seed=N&duration=S&sessions=K&OPTION=V]`: a simulated machine, live.

    Generates session after session (each `duration` seconds, in state `label`, or cycling through the
    scenario's labels when none is given) at real time by default: a stand-in for live sensors. Other
    options go to the scenario (e.g. `camera_size=32`); a camera's size defaults to the bundle's.
    """

    FIXED = ("label", "seed", "duration", "sessions")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from edge_gmm.data import synth

        self.scenario = synth.SCENARIOS.get(self.spec.target)  # unknown name: ConfigError listing them
        self.seed = self.spec.option("seed", 0, int)
        self.duration = self.spec.option("duration", 10.0, float)
        self.count = self.spec.option("sessions", math.inf, float)
        self.opts = {k: _number(v) for k, v in self.spec.options.items() if k not in self.FIXED}
        self._fit_to_bundle()
        labels = list(getattr(self.scenario, "labels", []))
        label = self.spec.option("label")
        if label is not None and labels and label not in labels:
            raise ConfigError(f"synth: scenario {self.spec.target!r} has no label {label!r}", hint=f"labels: {', '.join(labels)}")
        self.labels = [label] if label else labels

    def _fit_to_bundle(self) -> None:
        """Size the scenario's sensors like the bundle's (camera frame, audio rate) where it has such knobs,
        then check every fed modality matches: windows of another shape would be garbage to the model."""
        import inspect

        params = inspect.signature(self.scenario).parameters
        for s in self.sensors.values():
            if s.kind == "camera" and "camera_size" in params:
                self.opts.setdefault("camera_size", s.height)
            if s.kind == "audio" and "audio_rate" in params:
                self.opts.setdefault("audio_rate", int(s.rate))
        try:
            have = {s.name: s for s in self.scenario(**self.opts).sensors()}
        except TypeError as e:
            raise ConfigError(f"synth://{self.spec.target}: bad option ({e})") from None
        _check_specs(f"synth://{self.spec.target}", have, self.sensors)
        self.absent = [m for m in self.sensors if m not in have]

    def _sessions(self):
        from edge_gmm.data import synth

        k = 0
        while k < self.count:
            label = self.labels[k % len(self.labels)]
            yield synth.generate_session(self.spec.target, label=label, seed=self.seed + k,
                                         duration_s=self.duration, **self.opts)
            k += 1


def _number(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _check_specs(where: str, have: dict, want: dict) -> None:
    for name, w in want.items():
        g = have.get(name)
        if g is not None and (g.kind, g.rate, g.sample_shape) != (w.kind, w.rate, w.sample_shape):
            raise DataError(f"{where}: modality {name!r} is {g.kind} {g.rate:g} Hz {g.sample_shape}, "
                            f"the bundle expects {w.kind} {w.rate:g} Hz {w.sample_shape}")
