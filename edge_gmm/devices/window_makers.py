"""What the loop's assembly thread makes of the chunks: the model inputs of each prediction (numpy only).

Two makers with one interface (`WindowMaker`); the loop owns threads, queues, sensor states and inference:

- `WholeWindows` (`--whole-window`, the torch runner, a bundle without the streaming split): the streaming
  assembler (data/windowing.py, the code that cut the training windows) cuts each window's raw samples every
  hop; the whole-window graph runs on them. A window's inputs are {modality: model layout}.
- `TokenWindows` (the default where the bundle has the split): a TokenCache (devices/tokens.py) calls each
  modality's encoder graph once per token, here in the assembly thread, as the token's samples complete, and
  keeps the last window's tokens; every 1/rate s a snapshot becomes the inputs of the fusion graph,
  {tokens_<m>: (N_m, D), mask_<m>: (N_m,)} (per-token masks: a sensor that drops out for 0.3 s masks only the
  tokens of those 0.3 s). Its modality mask is 1 where any token is present.

`pop_ready` returns `Cut`s; the loop gives each its sensor states and `apply_states` masks what they rule out:
a whole window masks a modality that is not `ok`; a token snapshot masks every token of a `missing` one (its
source is not up) and leaves a `stale` one's tokens as the cache masked them, token by token.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge_gmm.config import SensorSpec, WindowSpec
from edge_gmm.data.format import SensorChunk


@dataclass
class Cut:
    """One prediction's inputs (no batch axis), its modality mask float32[M] and the encoder ms behind it."""

    t_end: float  # host clock
    inputs: dict[str, np.ndarray]
    mask: np.ndarray
    encode_ms: float = 0.0  # encoder time spent since the previous cut (token snapshots only)


class WindowMaker:
    """Chunks in (host clock, in order per modality), `Cut`s out. `start` comes with the first chunk, when the
    grid's origin is known; `pop_ready` does bounded work and sets `backlog` when more is ready."""

    mode = ""

    def __init__(self, window: WindowSpec, modalities: list[str]):
        self.window, self.modalities = window, list(modalities)  # mask column order

    @property
    def started(self) -> bool:
        raise NotImplementedError

    @property
    def backlog(self) -> bool:
        raise NotImplementedError

    @property
    def rate(self) -> float:
        """Predictions per second of sensor data."""
        return 1.0 / self.window.hop_s

    def burst(self, late_s: float) -> int:
        """Cuts a sensor up to `late_s` late holds back and then releases at once (each waits for it, then all are
        ready): what the loop's window queue holds at least, so that a late sensor costs no prediction."""
        return math.ceil(self.rate * late_s) + 1

    def start(self, sensors: list[SensorSpec], origin: float) -> None:
        raise NotImplementedError

    def push(self, chunk: SensorChunk) -> None:
        raise NotImplementedError

    def pop_ready(self, final: bool = False) -> list[Cut]:
        """Cuts ready now, oldest first; `final`: after the last chunk, those the data's end completes."""
        raise NotImplementedError

    def apply_states(self, cut: Cut, states: dict[str, str]) -> None:
        raise NotImplementedError

    def counts(self) -> dict[str, dict[str, int]]:
        """Input set aside (bad times) and work done, per modality: the metrics' `assembler`."""
        raise NotImplementedError

    def stats(self, fusion_ms: np.ndarray) -> dict[str, Any]:
        """The metrics' `stream` object; `fusion_ms`: the latest per-prediction graph times."""
        return {"mode": self.mode, "rate_hz": round(self.rate, 6)}


class WholeWindows(WindowMaker):
    """Whole windows every hop, cut by the streaming assembler, for the whole-window graph."""

    mode = "whole-window"

    def __init__(self, window: WindowSpec, modalities: list[str]):
        super().__init__(window, modalities)
        self.assembler = None  # a StreamingAssembler once started

    @property
    def started(self) -> bool:
        return self.assembler is not None

    @property
    def backlog(self) -> bool:
        return self.assembler is not None and self.assembler.backlog

    def start(self, sensors: list[SensorSpec], origin: float) -> None:
        from edge_gmm.data.windowing import StreamingAssembler

        self.assembler = StreamingAssembler(sensors, self.window, origin=origin)

    def push(self, chunk: SensorChunk) -> None:
        self.assembler.push(chunk)

    def pop_ready(self, final: bool = False) -> list[Cut]:
        ready = self.assembler.flush() if final else self.assembler.pop_ready()
        return [Cut(float(t_end), inputs, np.asarray(mask, dtype=np.float32).copy()) for t_end, inputs, mask in ready]

    def apply_states(self, cut: Cut, states: dict[str, str]) -> None:
        for i, m in enumerate(self.modalities):
            if states[m] != "ok" and cut.mask[i]:  # masked here, not by the assembler: zeros, as in training
                cut.mask[i] = 0.0
                cut.inputs[m] = np.zeros_like(cut.inputs[m])

    def counts(self) -> dict[str, dict[str, int]]:
        return self.assembler.counts() if self.assembler is not None else {}


class TokenWindows(WindowMaker):
    """Token snapshots at `rate` Hz from a TokenCache fed by the bundle's encoder graphs (runtime/stream.py)."""

    mode = "stream"

    def __init__(self, window: WindowSpec, modalities: list[str], layouts: dict, encoders: dict[str, Callable],
                 dim: int, rate: float):
        super().__init__(window, modalities)
        self.layouts, self.dim, self._rate = layouts, int(dim), float(rate)
        self.encoders = {m: self._timed(m, encoders[m]) for m in self.modalities}
        self.cache = None  # a TokenCache once started
        self.encode_s = collections.Counter()  # modality -> encoder seconds, all time
        self.samples = collections.Counter()  # modality -> samples pushed (camera: frames)
        self.rates: dict[str, float] = {}
        self._since = 0.0  # encoder seconds since the last cut

    def _timed(self, m: str, encoder: Callable) -> Callable:
        def encode(x: np.ndarray) -> np.ndarray:
            t0 = time.perf_counter()
            out = encoder(x)
            dt = time.perf_counter() - t0
            self.encode_s[m] += dt
            self._since += dt
            return out

        return encode

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def started(self) -> bool:
        return self.cache is not None

    @property
    def backlog(self) -> bool:
        return self.cache is not None and self.cache.backlog

    def start(self, sensors: list[SensorSpec], origin: float) -> None:
        from edge_gmm.devices.tokens import TokenCache

        self.rates = {s.name: s.rate for s in sensors}
        self.cache = TokenCache(sensors, self.window, dict(self.layouts), self.encoders, self.dim, self._rate,
                                origin=origin)

    def push(self, chunk: SensorChunk) -> None:
        self.samples[chunk.modality] += len(chunk)
        self.cache.push(chunk)

    def pop_ready(self, final: bool = False) -> list[Cut]:
        snaps = self.cache.flush() if final else self.cache.pop_ready()
        cuts = []
        for snap in snaps:
            inputs = {}
            for m in self.modalities:
                inputs[f"tokens_{m}"] = snap.tokens[m]
                inputs[f"mask_{m}"] = snap.mask[m]
            mask = np.array([float(snap.mask[m].any()) for m in self.modalities], np.float32)
            cuts.append(Cut(float(snap.t), inputs, mask, self._since * 1e3))
            self._since = 0.0  # what the next cut's encoders cost starts now
        return cuts

    def apply_states(self, cut: Cut, states: dict[str, str]) -> None:
        for i, m in enumerate(self.modalities):
            if states[m] == "missing" and cut.mask[i]:  # the source is not up: none of its tokens count
                cut.mask[i] = 0.0
                cut.inputs[f"tokens_{m}"] = np.zeros_like(cut.inputs[f"tokens_{m}"])
                cut.inputs[f"mask_{m}"] = np.zeros_like(cut.inputs[f"mask_{m}"])

    def counts(self) -> dict[str, dict[str, int]]:
        return self.cache.counts() if self.cache is not None else {}

    def stats(self, fusion_ms: np.ndarray) -> dict[str, Any]:
        """Per-stage cost: encoder calls and encoder ms per second of sensor data (amortized over the run),
        fusion ms per prediction, tokens held in the cache."""
        calls = self.cache.counts()["encoder_calls"] if self.cache is not None else {m: 0 for m in self.modalities}
        cached = self.cache.cached() if self.cache is not None else {m: 0 for m in self.modalities}
        per_s = {}
        for m in self.modalities:
            seconds = self.samples[m] / self.rates[m] if self.rates.get(m) else 0.0
            per_s[m] = round(self.encode_s[m] * 1e3 / seconds, 4) if seconds > 0 else 0.0
        fusion = ({"p50": float(np.percentile(fusion_ms, 50)), "p99": float(np.percentile(fusion_ms, 99))}
                  if len(fusion_ms) else {"p50": 0.0, "p99": 0.0})
        return {**super().stats(fusion_ms), "encoder_calls": dict(calls), "encode_ms_per_s": per_s,
                "fusion_ms": fusion, "tokens_cached": {m: cached[m] * self.layouts[m].per_call for m in self.modalities}}
