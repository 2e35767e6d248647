"""The on-device loop: sources → window maker → bounded window queue → runner → post-processing → publisher.

Threads and queues (every queue bounded, so memory never grows):

    source threads ──chunks──► assembly thread ──windows──► main thread (infer, post-process, publish)
    (SourceDriver)   (queue)   WindowMaker         (DropOldestQueue)

- One host clock (`HostClock`, monotonic seconds) stamps every chunk; payload times are its wall-clock image.
- The window maker (devices/window_makers.py) is the loop's schedule. Streaming (the default where the bundle
  has the split): per modality, each token is encoded as its samples complete, into a cache of the last window's
  tokens with per-token masks; a snapshot every 1/rate s is the fusion graph's input. Whole-window: the
  streaming assembler (the code that cut the training windows) cuts a window every hop for the whole graph.
- Sensor state per window: `missing` when its source is not up (never started, down, failed, ended) or the
  sources file does not feed it; `stale` when its last sample is older than its timeout or the window lacks
  coverage (no token present); else `ok`. Missing is masked (every token of it); a whole window also masks a
  stale modality, a token snapshot masks a stale one token by token (the model was trained with both).
- Back-pressure: when inference falls behind, the window queue drops its OLDEST window (counted in
  `dropped_windows`); a lossless source (replay at --speed max) is blocked instead, so nothing is dropped.
- Inference-side faults (runner, post-processing, payload, publish) skip their window and are counted per stage
  (`errors`), as source faults are; REOPEN_AFTER failures in a row reopen the runner, STOP_AFTER stop the loop.
- The summary's `exit_code` tells a supervisor the truth (errors.py): 0 a clean stop, 2 sources that all failed
  with a user error, 75 a failure a restart may cure (assembly error, inference failing, sources down for good).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edge_gmm.config import SensorSpec, WindowSpec
from edge_gmm.devices.postprocess import PostProcessor
from edge_gmm.devices.sources import HostClock, Source
from edge_gmm.devices.sources.driver import SourceDriver
from edge_gmm.devices.window_makers import WholeWindows, WindowMaker
from edge_gmm.errors import EXIT_OK, EXIT_RESTART, EXIT_USER

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often idle threads wake up to check for stop and stale sensors
LATENCY_HISTORY = 2048  # latest samples kept per stage for percentiles
STAGES = ("infer", "post", "payload", "publish")  # inference-side stages whose failures are counted in `errors`
REOPEN_AFTER = 10  # failures in a row before the runner is reopened (a wedged CUDA context or session)
STOP_AFTER = 2 * REOPEN_AFTER  # ... and before the loop gives up: "inference failing", exit 75


@dataclass
class LoopOptions:
    device_id: str
    max_seconds: float = 0.0  # 0 = until stopped (or until every source has ended)
    max_windows: int = 0  # 0 = no limit
    queue_windows: int = 8  # windows waiting for inference (at least a late sensor's burst); beyond, the oldest is dropped
    chunk_queue: int = 512  # chunks waiting for the window maker
    metrics_every_s: float = 10.0


@dataclass
class _StateMark:
    """A source's state change, queued in line with its chunks so windows see states in data order."""

    driver: SourceDriver
    state: str


@dataclass
class Window:
    t_end: float  # host clock
    inputs: dict[str, np.ndarray]  # graph input name -> one row without batch axis (window_makers.py)
    mask: np.ndarray  # float32[M], mask column order
    sensors: dict[str, str]  # modality -> ok | stale | missing
    t_arrival: float  # perf_counter when the chunk that completed this window reached the loop
    t_ready: float = field(default_factory=time.perf_counter)  # when the window maker cut it
    encode_ms: float | None = None  # token snapshots: encoder ms spent since the previous one


class DropOldestQueue:
    """A bounded FIFO. `put` on a full queue drops the oldest item and counts it, or waits when `block`."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()

    def put(self, item, *, block: bool = False, stop: threading.Event | None = None) -> bool:
        """Enqueue `item`; False when a blocked put gave up because `stop` was set (nothing dropped)."""
        with self._cond:
            while block and len(self._items) >= self.maxsize:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(TICK_S)
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get_many(self, n: int, timeout: float) -> list:
        """Up to `n` items, waiting at most `timeout` for the first."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            if out:
                self._cond.notify_all()
            return out

    def __len__(self) -> int:
        return len(self._items)


class LatencyStats:
    """Per-stage milliseconds: the latest LATENCY_HISTORY samples for p50/p99, all-time count and max."""

    def __init__(self):
        self._hist: dict[str, collections.deque] = {}
        self._max: dict[str, float] = {}

    def add(self, stage: str, ms: float) -> None:
        self._hist.setdefault(stage, collections.deque(maxlen=LATENCY_HISTORY)).append(ms)
        self._max[stage] = max(ms, self._max.get(stage, 0.0))

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, h in self._hist.items():
            a = np.fromiter(h, dtype=np.float64)
            out[stage] = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
                          "max": self._max[stage], "n": len(a)}
        return out

    def values(self, stage: str) -> np.ndarray:
        return np.fromiter(self._hist.get(stage, ()), dtype=np.float64)


class Loop:
    """Build with everything opened (runner active, sources constructed, publisher started); `run()` blocks.

    `publish(payload)` takes a prediction payload dict; `publish_metrics(values)` a metrics dict; either may
    be None (a dry run). `payload_fn` builds the prediction payload (mqtt.payload.prediction_payload).
    """

    telemetry: Callable[[], dict[str, Any]] | None = None  # Jetson readings (tegrastats) for the metrics topic

    def __init__(self, *, sensors: list[SensorSpec], window: WindowSpec, modalities: list[str], runner,
                 post: PostProcessor, sources: list[Source], timeouts: dict[str, float], model: dict[str, Any],
                 options: LoopOptions, payload_fn: Callable[..., dict], publish: Callable[[dict], Any] | None,
                 publish_metrics: Callable[[dict], Any] | None = None, clock: HostClock | None = None,
                 maker: WindowMaker | None = None):
        self.sensors = {s.name: s for s in sensors}
        self.window = window
        self.modalities = modalities  # mask column order == the model's input order
        self.runner = runner
        self.post = post
        self.model = model
        self.opt = options
        self.payload_fn = payload_fn
        self.publish = publish
        self.publish_metrics = publish_metrics
        self.clock = clock or (sources[0].clock if sources else HostClock())
        self.timeouts = {m: timeouts.get(m, self.sensors[m].stale_after_s) for m in modalities}
        self.maker = maker or WholeWindows(window, modalities)  # started at the first chunk (the grid's origin)
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.exit_code = EXIT_OK  # what `run` exits with (errors.py)
        self.stop_error = ""  # one line on why a non-clean stop happened
        self.errors = collections.Counter({s: 0 for s in STAGES})
        self._streak = 0  # inference-side failures since the last published prediction
        self._logged_errors: set[str] = set()
        self.lossless = any(s.lossless for s in sources)
        self._chunks: queue.Queue = queue.Queue(maxsize=options.chunk_queue)
        # at 20 predictions/s a sensor late by its 1 s timeout releases 21 at once: the queue holds such a burst
        self.windows = DropOldestQueue(max(options.queue_windows, self.maker.burst(max(self.timeouts.values(), default=0.0))))
        self.drivers = [SourceDriver(s, self._sink_for(s), self._on_source_state, self.stop_event) for s in sources]
        self.fed_by = {m: d for d in self.drivers for m in d.source.modalities}
        absent = {m for s in sources for m in getattr(s, "absent", [])}
        for m in absent:
            self.fed_by.pop(m, None)
        self.last_t: dict[str, float] = {}  # modality -> newest sample time (assembly thread)
        self.source_state: dict[SourceDriver, str] = {}  # as of the chunks assembled so far
        self.last_sensors: dict[str, str] = {}
        self._logged_state: dict[SourceDriver, str] = {}
        self.latency = LatencyStats()
        self.counts = collections.Counter()
        self.batch, self.input_specs = self._input_layout()
        self._assembly_done = threading.Event()
        self._grid_lock = threading.Lock()
        self._arrival = 0.0
        self.realtime = all(s.paced and s.speed == 1.0 for s in sources)
        self._checked = False
        self.started_at = 0.0

    # ------------------------------------------------------------ wiring
    def _input_layout(self):
        specs = {t.name: t for t in self.runner.inputs}
        batch = specs["mask"].shape[0] if "mask" in specs else next(iter(specs.values())).shape[0]
        return batch, specs

    def _sink_for(self, source: Source):
        lossless = source.lossless

        def sink(chunk) -> None:
            if not self.maker.started:
                self._start_grid(source, chunk)
            if not lossless:  # a live sensor cannot wait: count what the assembler could not take
                try:
                    self._chunks.put_nowait((time.perf_counter(), chunk))
                except queue.Full:
                    self.counts["dropped_chunks"] += 1
                return
            while not self.stop_event.is_set():  # replay at max speed: wait for room, bounded by stop
                try:
                    self._chunks.put((time.perf_counter(), chunk), timeout=TICK_S)
                    return
                except queue.Full:
                    continue

        return sink

    def _start_grid(self, source: Source, chunk) -> None:
        """Windows end on origin + k * hop (tokens on origin + j * token hop, predictions on origin + k / rate).
        A replay's origin is its session start on the host clock, which puts the grid where training put it; a
        live source starts the grid at its first sample."""
        from dataclasses import replace

        with self._grid_lock:
            if self.maker.started:
                return
            origin = getattr(source, "origin", None)
            origin = float(chunk.t[0]) if origin is None else origin
            # a timeout from the sources file replaces the sensor spec's: the window maker masks by it too
            specs = [replace(self.sensors[m], timeout_s=self.timeouts[m]) if self.timeouts[m] != self.sensors[m].stale_after_s
                     else self.sensors[m] for m in self.modalities]
            self.maker.start(specs, origin)

    def _on_source_state(self, driver: SourceDriver, state: str) -> None:
        # Log transitions a user cares about; a port that stays away retries quietly (DEBUG).
        before = self._logged_state.get(driver)
        quiet = state == "connecting" or (state == "down" and before == "down")
        if not quiet:
            error = driver.error.splitlines()[0] if driver.error else ""
            level = logging.WARNING if state in ("down", "failed") else logging.INFO
            log.log(level, "source %s: %s%s", driver.source.describe(), state, f" ({error})" if error else "")
            self._logged_state[driver] = state
        self.counts[f"source_{state}"] += 1
        while not self.stop_event.is_set():  # never dropped: a lost "down" would leave a dead sensor "ok"
            try:
                self._chunks.put((time.perf_counter(), _StateMark(driver, state)), timeout=TICK_S)
                return
            except queue.Full:
                continue

    def request_stop(self, reason: str, code: int = EXIT_OK, error: str = "") -> None:
        """The first request wins: its reason, exit code and error line are what the summary reports."""
        if not self.stop_event.is_set():
            self.stop_reason, self.exit_code, self.stop_error = reason, code, error
            self.stop_event.set()

    # ------------------------------------------------------------ sensor states
    def sensor_state(self, m: str, t_end: float, mask_value: float) -> str:
        """ok / stale / missing for modality `m` in the window ending at `t_end` (see the module docstring)."""
        driver = self.fed_by.get(m)
        state = self.source_state.get(driver) if driver is not None else None
        if state not in ("up", "ended") or m not in self.last_t:
            return "missing"
        behind = t_end - self.last_t[m] > self.timeouts[m]
        if state == "ended" and behind:  # a replay that finished: gone for good, not late
            return "missing"
        return "stale" if behind or mask_value == 0 else "ok"

    # ------------------------------------------------------------ assembly thread
    def _assemble(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    chunk = self._chunks.get(timeout=TICK_S)
                except queue.Empty:
                    if not any(d.is_alive() for d in self.drivers) and self._chunks.empty():
                        self._drain(final=True)  # every source ended: the windows left in the buffers
                        return
                    continue
                self._push(chunk)
                for _ in range(64):  # drain what piled up before cutting windows: fewer pop_ready calls
                    try:
                        self._push(self._chunks.get_nowait())
                    except queue.Empty:
                        break
                self._drain()
        except Exception as e:  # a bug here must stop the loop loudly, not leave it waiting forever
            log.exception("assembly thread failed")
            self.request_stop("assembly error", EXIT_RESTART, f"{type(e).__name__}: {e}")
        finally:
            self._assembly_done.set()

    def _push(self, item: tuple[float, Any]) -> None:
        arrival, chunk = item
        if isinstance(chunk, _StateMark):
            self.source_state[chunk.driver] = chunk.state
            return
        if chunk.modality not in self.sensors or len(chunk) == 0:
            return
        self._arrival = arrival
        self.last_t[chunk.modality] = float(chunk.t[-1])
        self.maker.push(chunk)

    def _drain(self, final: bool = False) -> None:
        """Queue what the maker has ready; it cuts a bounded batch per call, so the rest goes batch by batch."""
        self._emit_ready(final)
        while self.maker.started and self.maker.backlog and not self.stop_event.is_set():
            self._emit_ready(final)

    def _emit_ready(self, final: bool = False) -> None:
        if not self.maker.started:
            return
        streaming = self.maker.mode == "stream"
        for cut in self.maker.pop_ready(final):
            states = {m: self.sensor_state(m, cut.t_end, cut.mask[i]) for i, m in enumerate(self.modalities)}
            self.maker.apply_states(cut, states)
            self.last_sensors = states
            w = Window(cut.t_end, cut.inputs, cut.mask, states, self._arrival,
                       encode_ms=cut.encode_ms if streaming else None)
            if self.windows.put(w, block=self.lossless, stop=self.stop_event):
                self.counts["windows"] += 1

    # ------------------------------------------------------------ main thread
    def run(self) -> dict[str, Any]:
        """Run until stopped, `max_seconds`, `max_windows`, or every source ended; returns the summary."""
        self.started_at = time.monotonic()
        assembly = threading.Thread(target=self._assemble, name="assembly", daemon=True)
        assembly.start()
        for d in self.drivers:
            d.start()
        next_metrics = self.started_at + self.opt.metrics_every_s
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if self.opt.max_seconds and now - self.started_at >= self.opt.max_seconds:
                    self.request_stop("max-seconds")
                    break
                batch = self.windows.get_many(self.batch, timeout=TICK_S)
                if batch:
                    self._process(batch)
                    if self.opt.max_windows and self.counts["predictions"] >= self.opt.max_windows:
                        self.request_stop("max-windows")
                elif self._assembly_done.is_set() and not len(self.windows):
                    self.request_stop(*self._sources_outcome())
                if self.publish_metrics and now >= next_metrics:
                    self.publish_metrics(self.metrics())
                    next_metrics = now + self.opt.metrics_every_s
        finally:
            self.stop_event.set()
            for d in self.drivers:
                d.join(timeout=2.0)
            assembly.join(timeout=2.0)
        return self.summary()

    def _feed(self, batch: list[Window]) -> dict[str, np.ndarray]:
        """Stack windows into the model's static batch; rows past len(batch) stay zero with mask 0."""
        feed = {}
        for name, spec in self.input_specs.items():
            arr = np.zeros(spec.shape, dtype=spec.dtype)  # (B, ...)
            for i, w in enumerate(batch):
                arr[i] = w.mask if name == "mask" else w.inputs[name]
            feed[name] = arr
        return feed

    def _sources_outcome(self) -> tuple[str, int, str]:
        """Why the loop ends once every source is gone. A replay that finished is a clean stop; sources that all
        `failed` hit an error the user must fix (bad data, a missing driver); else a source went down for good
        on a transport error, which a restart may cure."""
        states = [d.state for d in self.drivers]
        if not self.drivers or "ended" in states:
            return "sources ended", EXIT_OK, ""
        first = next((d for d in self.drivers if d.error), None)
        error = f"{first.source.describe()}: {first.error.splitlines()[0]}" if first else ""
        code = EXIT_USER if all(s == "failed" for s in states) else EXIT_RESTART
        return "sources failed", code, error

    def _process(self, batch: list[Window]) -> None:
        t0 = time.perf_counter()
        try:
            feed = self._feed(batch)
            t1 = time.perf_counter()
            outputs = self.runner.infer(feed, check=not self._checked)
        except Exception as e:  # the whole batch is skipped: there are no outputs to post-process
            self._failed("infer", e, len(batch))
            return
        self._checked = True
        t2 = time.perf_counter()
        for row, w in enumerate(batch):
            self._predict(w, outputs, row, (t0, t1, t2))

    def _predict(self, w: Window, outputs: dict[str, np.ndarray], row: int, times: tuple[float, float, float]) -> None:
        """Post-process, build and publish one window's prediction; a failing stage skips only this window."""
        t0, t1, t2 = times
        stage = "post"
        try:
            tasks = self.post(outputs, row=row)
            t3 = time.perf_counter()
            lat = {"assemble": (w.t_ready - w.t_arrival) * 1e3, "queue": (t0 - w.t_ready) * 1e3,
                   "prepare": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                   "total": (t3 - w.t_arrival) * 1e3}
            if w.encode_ms is not None:  # a token snapshot: its fusion graph, and the encoders since the last one
                lat["fusion"], lat["encode"] = lat["infer"], w.encode_ms
            if self.realtime:  # how old the window's end is when its prediction leaves: sensor delivery included
                lat["age"] = (self.clock.now() - w.t_end) * 1e3
            stage = "payload"
            payload = self.payload_fn(
                device_id=self.opt.device_id, window_start=self.clock.to_wall(w.t_end - self.window.length_s),
                window_end=self.clock.to_wall(w.t_end), model=self.model, tasks=tasks, sensors=w.sensors,
                latency_ms=lat)
            stage = "publish"
            if self.publish is not None:
                self.publish(payload)
        except Exception as e:
            self._failed(stage, e, 1)
            return
        self._streak = 0
        t4 = time.perf_counter()
        lat["publish"] = (t4 - t3) * 1e3
        lat["overhead"] = lat["total"] + lat["publish"] - lat["infer"]  # end-to-end minus inference
        for name, ms in lat.items():
            self.latency.add(name, ms)
        self.counts["predictions"] += 1
        for m, s in w.sensors.items():
            self.counts[f"{m}:{s}"] += 1

    def _failed(self, stage: str, exc: Exception, windows: int) -> None:
        """Count a failed stage and skip its window(s), logging each stage's first failure only: a fault that
        repeats every window must not flood the journal. A long run of failures reopens the runner, then stops."""
        self.errors[stage] += 1
        self.counts["skipped_windows"] += windows
        self._streak += 1
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if stage not in self._logged_errors:
            self._logged_errors.add(stage)
            log.warning("%s failed (%s); window skipped, the loop goes on (counted in errors.%s; logged once)",
                        stage, what, stage)
            log.debug("%s failure", stage, exc_info=exc)
        if self._streak == REOPEN_AFTER:
            self._reopen_runner()
        elif self._streak >= STOP_AFTER:
            self.request_stop("inference failing", EXIT_RESTART, f"{STOP_AFTER} failures in a row, the last in {stage}: {what}")

    def _reopen_runner(self) -> None:
        """Exit and re-enter the runner: a fresh session / CUDA context cures a wedged one."""
        log.warning("%d inference-side failures in a row: reopening the %s runner", REOPEN_AFTER, self.runner.name)
        self.counts["runner_reopens"] += 1
        self._checked = False
        try:
            self.runner.deactivate()
            self.runner.activate()
        except Exception as e:
            self.request_stop("inference failing", EXIT_RESTART, f"reopening the runner failed: {type(e).__name__}: {e}")

    # ------------------------------------------------------------ reporting
    def current_sensors(self) -> dict[str, str]:
        """States in the newest window (all missing before the first)."""
        return dict(self.last_sensors) if self.last_sensors else {m: "missing" for m in self.modalities}

    def metrics(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "windows": self.counts["windows"],
            "predictions": self.counts["predictions"],
            "dropped_windows": self.windows.dropped,
            "dropped_chunks": self.counts["dropped_chunks"],
            "queue": len(self.windows),
            "latency_ms": self.latency.summary(),
            "errors": dict(self.errors),  # stage -> failures; each skipped its window(s)
            "skipped_windows": self.counts["skipped_windows"],
            "runner_reopens": self.counts["runner_reopens"],
            "sensors": self.current_sensors(),
            "sources": {d.source.describe(): {"state": d.state, "restarts": d.restarts, "error": d.error,
                                              **getattr(d.source, "counts", {})}  # e.g. a serial link's errors
                        for d in self.drivers},
            # time jumps, NaN/inf times and out-of-order samples set aside, per modality (streaming: encoder work too)
            "assembler": self.maker.counts(),
            "stream": self.maker.stats(self.latency.values("fusion")),
            **({"jetson": self.telemetry()} if self.telemetry is not None and self.telemetry() else {}),
        }

    def summary(self) -> dict[str, Any]:
        m = self.metrics()
        m["reason"] = self.stop_reason
        m["exit_code"] = self.exit_code
        if self.stop_error:
            m["error"] = self.stop_error
        m["sensor_windows"] = {k: v for k, v in self.counts.items() if ":" in k}
        return m
