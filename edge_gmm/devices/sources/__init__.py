"""Sensor sources picked by URI (STYLE.md #4). A Source yields `SensorChunk`s on the host clock.

    replay://DATASET[?modalities=audio,camera&session=ID&split=test&loop=1]   a recorded dataset
    synth://SCENARIO[?label=..&seed=..&modalities=..]                         a simulated machine, live
    serial:///dev/ttyACM0[?baud=921600] · socket://host:port · a pty path    the MCU via firmware_bridge
    audio://default[?device=NAME&rate=16000]                                 a microphone (sounddevice)
    camera://0[?rate=5&size=96x96] · camera://clip.avi[?loop=1] · a GStreamer pipeline ("... ! appsink")   OpenCV

`open_source(uri, sensors, ...)` parses the URI, looks the scheme up in `SOURCES` and builds the source.
A source is driven from its own thread by `driver.SourceDriver`, which reconnects live sources when
they fail. Engines (pyserial, sounddevice, OpenCV) are imported only when a source of that kind opens.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import parse_qsl, unquote

from edge_gmm.config import SensorSpec
from edge_gmm.errors import ConfigError
from edge_gmm.registry import Registry


class HostClock:
    """The one clock every chunk is stamped on: `time.monotonic()` seconds (never jumps with NTP).

    `to_wall(t)` gives Unix seconds for payloads, from an offset taken once at start.
    """

    def __init__(self):
        self._offset = time.time() - time.monotonic()

    def now(self) -> float:
        return time.monotonic()

    def to_wall(self, t: float) -> float:
        return t + self._offset


@dataclass
class SourceSpec:
    """A parsed source URI and the bundle modalities it feeds.

    `rename` maps a name the source uses (e.g. an MCU descriptor's) to the bundle's modality name.
    """

    uri: str
    scheme: str
    target: str  # what follows "scheme://": a path, a device, a scenario, a pipeline
    options: dict[str, str] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)

    def option(self, key: str, default=None, cast=str):
        if key not in self.options:
            return default
        try:
            return cast(self.options[key])
        except ValueError:
            raise ConfigError(f"source {self.uri!r}: option {key}={self.options[key]!r} is not a valid {cast.__name__}") from None

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.options.get(key)
        return default if v is None else v.lower() in ("1", "true", "yes", "on")


# Options each scheme reads (besides `modalities`), so that a misspelling (`?sesion=`) is an error, not a
# silently ignored key. synth:// also takes its scenario's keyword arguments (e.g. camera_size).
SOURCE_OPTIONS: dict[str, tuple[str, ...]] = {
    "replay": ("session", "split", "loop"),
    "synth": ("label", "seed", "duration", "sessions"),
    "serial": ("baud", "format", "frequency", "name"),
    "socket": ("baud", "format", "frequency", "name"),
    # rate / size declare the sensor a microphone or camera is recorded as (`record`); `run` checks them
    # against the bundle. loop: play a video file again from its start when it ends.
    "audio": ("device", "block", "rate"),
    "camera": ("rate", "size", "loop"),
    "gstreamer": (),
}


def known_options(spec: SourceSpec) -> tuple[str, ...] | None:
    """The options `spec`'s scheme understands; None for a scheme without an entry (open_source refuses it)."""
    if spec.scheme not in SOURCE_OPTIONS:
        return None
    extra: tuple[str, ...] = ()
    if spec.scheme == "synth":
        import inspect

        from edge_gmm.data import synth

        extra = tuple(inspect.signature(synth.SCENARIOS.get(spec.target)).parameters)  # unknown name: ConfigError
    return ("modalities", *SOURCE_OPTIONS[spec.scheme], *extra)


def check_options(spec: SourceSpec) -> None:
    """ConfigError naming an option the scheme does not read, the closest known one and all of them."""
    known = known_options(spec)
    if known is None:
        return
    for key in spec.options:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise ConfigError(f"source {spec.uri!r}: unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                              hint=f"{spec.scheme} sources take: {', '.join(known)}")


def parse_uri(uri: str) -> SourceSpec:
    """`scheme://target?k=v&...` → SourceSpec. A pty/device path means serial; a string with '!' a GStreamer camera."""
    uri = uri.strip()
    if not uri:
        raise ConfigError("empty source URI", hint="e.g. replay://data/machine-health or serial:///dev/ttyACM0")
    if "!" in uri and "://" not in uri.split("!")[0]:
        return SourceSpec(uri=uri, scheme="gstreamer", target=uri)
    if "://" not in uri:
        path, _, query = (uri[len("pty:"):] if uri.startswith("pty:") else uri).partition("?")  # 3.8: no removeprefix
        if uri.startswith("pty:") or path.startswith("/dev/") or os.path.exists(path):
            return _checked(SourceSpec(uri=uri, scheme="serial", target=path, options=_query(uri, query)))
        schemes = ", ".join(s + "://" for s in SOURCES.names() if s != "gstreamer")
        raise ConfigError(f"source {uri!r} has no scheme and is no serial device or pty path",
                          hint=f"use one of: {schemes}, a /dev/tty* or pty path, or a GStreamer pipeline")
    scheme, rest = uri.split("://", 1)
    target, _, query = rest.partition("?")
    return _checked(SourceSpec(uri=uri, scheme=scheme.lower(), target=unquote(target), options=_query(uri, query)))


def _query(uri: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for k, v in parse_qsl(query):
        if options.setdefault(k, v) != v:
            raise ConfigError(f"source {uri!r}: option {k!r} given twice ({options[k]!r} and {v!r})")
    return options


def _checked(spec: SourceSpec) -> SourceSpec:
    check_options(spec)
    return spec


class Source:
    """Base class: `stream(stop)` yields SensorChunks until the source ends or `stop` is set.

    A transport error (port gone, device unplugged) raises out of `stream`; the driver then reports the
    source down and, when `reconnects`, opens it again after a back-off. A generator that returns means
    the source ended for good (a replay that does not loop).
    """

    reconnects = True  # live hardware: try again after an error
    lossless = False  # True: the loop must block this source rather than drop its windows (replay at max speed)
    paced = True  # chunks arrive at the sensor's real rate on the host clock

    def __init__(self, spec: SourceSpec, sensors: dict[str, SensorSpec], clock: HostClock, speed: float = 1.0,
                 align_s: float | None = None):
        self.spec = spec
        self.sensors = sensors  # bundle modality -> spec, only the modalities this source feeds
        self.clock = clock
        self.speed = speed
        self.align_s = align_s  # the window hop: a player starts each session on the window grid
        self.origin: float | None = None  # host time where the window grid starts, when the source knows it

    @property
    def modalities(self) -> list[str]:
        return list(self.sensors)

    def stream(self, stop: threading.Event) -> Iterator:
        raise NotImplementedError

    def describe(self) -> str:
        return self.spec.uri


SOURCES: Registry[type[Source]] = Registry("source scheme")


def parse_speed(value: str | float | None) -> float:
    """`--speed`: a positive factor or 'max' (math.inf: as fast as the loop takes windows)."""
    if value is None:
        return 1.0
    if isinstance(value, str) and value.strip().lower() == "max":
        return math.inf
    try:
        speed = float(value)
    except ValueError:
        raise ConfigError(f"--speed must be a number or 'max', got {value!r}") from None
    if not speed > 0:
        raise ConfigError(f"--speed must be > 0, got {value!r}")
    return speed


def open_source(uri: str | SourceSpec, sensors: list[SensorSpec] | dict[str, SensorSpec], *,
                clock: HostClock | None = None, speed: float = 1.0, align_s: float | None = None) -> Source:
    """Build the source for `uri` feeding `sensors` (the bundle modalities it is responsible for)."""
    spec = uri if isinstance(uri, SourceSpec) else parse_uri(uri)
    if "modalities" in spec.options and not spec.modalities:  # `?modalities=a,b` on a URI given alone
        spec.modalities = [m.strip() for m in spec.options.pop("modalities").split(",") if m.strip()]
    table = sensors if isinstance(sensors, dict) else {s.name: s for s in sensors}
    if spec.modalities:
        missing = [m for m in spec.modalities if m not in table]
        if missing:
            raise ConfigError(f"source {spec.uri!r}: modality {missing[0]!r} is not one of the bundle's",
                              hint=f"the bundle's modalities: {', '.join(table)}")
        table = {m: table[m] for m in spec.modalities}
    cls = SOURCES.get(spec.scheme)
    return cls(spec, table, clock or HostClock(), speed=speed, align_s=align_s)


# The source kinds register themselves; their engines are imported only when a source opens.
from edge_gmm.devices.sources import live, playback  # noqa: E402,F401
