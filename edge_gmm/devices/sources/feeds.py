"""Live sources read the way `edge-gmm record` reads them: `start()`, `chunks(timeout)`, `sensors()`, `stop()`.

`record` has no bundle to fit, so each source says what it records. The MCU describes its own sensors: a
`BridgeFeed` reads it through firmware_bridge, as `record` always has. A microphone or camera has no
descriptors: it is the device loop's own Source (AudioSource, CameraSource) run by its SourceDriver thread
(`DrivenFeed`), recording as the sensor of that name in `like` (a bundle's or dataset's), else as its URI's
`?rate=` / `?size=` say, else as the source's defaults (`Feed.defaulted` names those, for the user).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import SensorChunk
from edge_gmm.errors import ConfigError, DeviceError
from edge_gmm.devices.sources import SOURCES, HostClock, SourceSpec, open_source
from edge_gmm.devices.sources.driver import SourceDriver
from edge_gmm.devices.sources.live import _mismatch, bridge_args

SERIAL_SCHEMES = ("serial", "socket")
PYSERIAL_URLS = ("loop", "rfc2217", "spy", "hwgrep", "alt")  # pyserial's own URL handlers: handed over whole
DRIVEN_SCHEMES = {"audio": "audio", "camera": "camera", "gstreamer": "camera"}  # scheme -> its modality's default name
BRIDGE_SCHEMES = (*SERIAL_SCHEMES, *PYSERIAL_URLS)  # what a BridgeFeed reads


class BridgeFeed:
    """The MCU behind a serial/socket spec. Records the modalities the spec names (all the MCU describes when
    it names none), renamed by its `sensor:` keys; with `like`, a sensor the MCU describes unlike it is refused."""

    def __init__(self, spec: SourceSpec, like: dict[str, SensorSpec], **bridge_options):
        from edge_gmm.firmware_bridge.source import open_bridge

        self.spec = spec
        self.like = like
        self.defaulted: dict[str, list[str]] = {}  # the MCU describes everything
        url, options = bridge_args(spec)
        self.reader = open_bridge(spec.uri if spec.scheme in PYSERIAL_URLS else url, **options, **bridge_options)

    def start(self) -> "BridgeFeed":
        self.reader.start()
        return self

    def ready(self) -> bool:
        described = {s.name for s in self.sensors()}
        return bool(described) and set(self.spec.modalities) <= described

    def waiting_for(self) -> str:
        described = sorted(self.spec.rename.get(s.name, s.name) for s in self.reader.sensors())
        if not described:
            return self.reader.last_error or "no sensor descriptor from the MCU"
        return f"the MCU describes {', '.join(described)}; wanted {', '.join(self.spec.modalities)}"

    def chunks(self, timeout: float) -> list[SensorChunk]:
        out = []
        for c in self.reader.chunks(timeout=timeout):
            name = self._name(c.modality)
            if name is not None:
                out.append(c if name == c.modality else SensorChunk(name, c.t, c.x))
        return out

    def sensors(self) -> list[SensorSpec]:
        out = []
        for s in self.reader.sensors():
            name = self._name(s.name)
            if name is None:
                continue
            renamed = SensorSpec(name, s.kind, s.rate, s.channels, list(s.units), s.height, s.width, s.timeout_s)
            self._check_like(renamed)
            out.append(renamed)
        return out

    def _name(self, described: str) -> str | None:
        name = self.spec.rename.get(described, described)
        return name if not self.spec.modalities or name in self.spec.modalities else None

    def _check_like(self, sensor: SensorSpec) -> None:
        want = self.like.get(sensor.name)
        problem = None if want is None else _mismatch(want, sensor.sample_shape, sensor)
        if problem is not None:
            raise ConfigError(f"{self.spec.uri}: the MCU describes {sensor.name!r} with {problem.replace('the bundle', '--like')}",
                              hint="record without --like, or change the MCU's sensor to match the model")

    def failure(self) -> str | None:
        return None  # the reader reconnects a lost port by itself; `record` keeps what came before

    def ended(self) -> bool:
        return False

    def stats(self) -> dict:
        s = self.reader.stats()
        return {k: s[k] for k in ("frames", "crc_errors", "gaps", "resyncs") if k in s}

    def stop(self) -> None:
        self.reader.stop()


class DrivenFeed:
    """A live Source in its SourceDriver thread, its chunks queued for `chunks()`."""

    def __init__(self, spec: SourceSpec, sensor: SensorSpec, defaulted: list[str], clock: HostClock):
        self.spec = spec
        self.source = open_source(spec, [sensor], clock=clock)  # checks ?rate=/?size= against `sensor`
        self.defaulted = {sensor.name: defaulted} if defaulted else {}
        self._queue: queue.Queue = queue.Queue()  # unbounded: record keeps every chunk
        self._stop = threading.Event()
        self.driver = SourceDriver(self.source, self._queue.put, lambda _driver, _state: None, self._stop)

    def start(self) -> "DrivenFeed":
        self.driver.start()
        return self

    def ready(self) -> bool:
        return self.driver.state in ("up", "ended")

    def waiting_for(self) -> str:
        return self.driver.error or f"the source is {self.driver.state}"

    def chunks(self, timeout: float) -> list[SensorChunk]:
        out = []
        try:
            out.append(self._queue.get(timeout=timeout))
            while True:
                out.append(self._queue.get_nowait())
        except queue.Empty:
            return out

    def sensors(self) -> list[SensorSpec]:
        return list(self.source.sensors.values())

    def failure(self) -> str | None:
        """Why the source cannot go on: a config or dependency error, or a source that does not reconnect
        (a video file) having failed."""
        d = self.driver
        if d.state == "failed" or (not d.is_alive() and d.state not in ("ended", "up") and not self._stop.is_set()):
            return d.error or d.state
        return None

    def ended(self) -> bool:
        return self.driver.state == "ended"

    def stats(self) -> dict:
        return {"chunks": self.driver.chunks, "restarts": self.driver.restarts, "state": self.driver.state}

    def stop(self) -> None:
        self._stop.set()
        if self.driver.is_alive():  # never started when an earlier source failed to open
            self.driver.join(timeout=2.0)


def open_feeds(specs: list[SourceSpec], like: list[SensorSpec], **bridge_options) -> list:
    """One feed per spec (not started). `like`: sensors recordings must match (from --like), may be empty."""
    clock = HostClock()
    table = {s.name: s for s in like}
    feeds = []
    for spec in specs:
        if spec.scheme in BRIDGE_SCHEMES:
            feeds.append(BridgeFeed(spec, table, **bridge_options))
        elif spec.scheme in DRIVEN_SCHEMES:
            sensor, defaulted = _driven_sensor(spec, table)
            feeds.append(DrivenFeed(spec, sensor, defaulted, clock))
        else:
            kinds = ", ".join(f"{s}://" for s in (*SERIAL_SCHEMES, "audio", "camera"))
            known = spec.scheme in SOURCES.names()
            raise ConfigError(f"source {spec.uri!r}: " + (f"record captures live sensors; {spec.scheme}:// is not one" if known
                                                           else f"protocol {spec.scheme!r} not known"),
                              hint=f"record takes {kinds}, a /dev/tty* or pty path, or a GStreamer pipeline")
    _check_unique(feeds)
    return feeds


def _driven_sensor(spec: SourceSpec, like: dict[str, SensorSpec]) -> tuple[SensorSpec, list[str]]:
    """(the sensor a microphone/camera records as, the options that took defaults)."""
    kind = DRIVEN_SCHEMES[spec.scheme]
    if len(spec.modalities) > 1:
        raise ConfigError(f"source {spec.uri!r} records one modality, but was given {', '.join(spec.modalities)}")
    name = spec.modalities[0] if spec.modalities else kind
    spec.modalities = [name]
    if like:
        if name not in like:
            raise ConfigError(f"source {spec.uri!r}: --like has no modality {name!r}", hint=f"it has: {', '.join(like)}")
        if like[name].kind != kind:
            raise ConfigError(f"source {spec.uri!r} records {kind}, but --like's {name!r} is {like[name].kind}")
        return like[name], []
    return SOURCES.get(spec.scheme).declared(spec, name)


def _check_unique(feeds: list) -> None:
    seen: dict[str, str] = {}
    for f in feeds:
        for m in f.spec.modalities:
            if seen.setdefault(m, f.spec.uri) != f.spec.uri:
                raise ConfigError(f"{seen[m]!r} and {f.spec.uri!r} both record {m!r}",
                                  hint="name each sensor in a sources file, e.g. 'cam_left: camera://0' and 'cam_right: camera://1'")


def start_feeds(feeds: list, timeout_s: float) -> None:
    """Start every feed and wait (bounded) until each has delivered or described something."""
    for f in feeds:
        f.start()
    deadline = time.monotonic() + timeout_s
    waiting = list(feeds)
    while waiting:
        for f in waiting:
            problem = f.failure()
            if problem is not None:
                raise DeviceError(f"{f.spec.uri}: {problem}")
        waiting = [f for f in waiting if not f.ready()]
        if waiting and time.monotonic() > deadline:
            raise DeviceError(f"{waiting[0].spec.uri}: not ready within {timeout_s:g} s ({waiting[0].waiting_for()})",
                              hint="check the device: 'edge-gmm bridge monitor URL' for an MCU, 'arecord -L' for audio")
        time.sleep(0.02)


@dataclass
class Like:
    """What `record --like` takes from a bundle or dataset: sensors to record as, its window and tasks."""

    sensors: list[SensorSpec]
    window: WindowSpec | None
    tasks: list[TaskSpec]


def read_like(path: str) -> Like:
    """The sensors, window and tasks of a dataset directory or a bundle (directory or .tar)."""
    from edge_gmm.data.format import FORMAT_NAME, MANIFEST, Dataset

    p = Path(path)
    try:
        is_dataset = p.is_dir() and json.loads((p / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        is_dataset = False
    if is_dataset:
        ds = Dataset.open(p)
        return Like(ds.sensors, ds.window, ds.tasks)
    from edge_gmm.runtime.bundle import Bundle

    bundle = Bundle.open(p)
    return Like(bundle.sensors, bundle.window, bundle.tasks)
