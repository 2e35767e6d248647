"""Live hardware sources: the MCU over serial (firmware_bridge), a microphone, a camera.

Each imports its engine only when it opens, and says what to install when the engine is absent.
Samples are stamped on the host clock when they arrive (the serial bridge maps MCU time itself).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time

import numpy as np

from edge_gmm.config import SensorSpec
from edge_gmm.errors import ConfigError, DeviceError, MissingDependencyError
from edge_gmm.devices.sources import SOURCES, Source, SourceSpec

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2  # every blocking read wakes up this often to notice a stop request
RATE_TOLERANCE = 0.05  # a described rate this close to the bundle's still fits its windows (forwarders detect theirs)
LINK_ERRORS = ("crc_errors", "malformed", "bad_payload", "bad_descriptor", "bad_time", "undescribed", "internal_errors")


class SerialSource(Source):
    """The MCU link: `serial:///dev/ttyACM0?baud=921600[&format=ei-forwarder&frequency=100&name=imu]`,
    `socket://host:port`, or a pty path.

    `firmware_bridge.open_bridge` decodes frames (or Edge Impulse forwarder lines) into SensorChunks with
    MCU time mapped to the host clock. Names the MCU announces map onto bundle modalities through
    `rename` (the sources file's `sensor:` key). A lost port ends `stream` with a DeviceError: the driver
    reports the modality missing and opens the port again, so an unplugged board comes back by itself.

    A sensor the MCU describes unlike the bundle (another channel count or rate) is masked, not fatal: its
    chunks are dropped (the loop then reports it stale), the change is counted in `descriptor_mismatch` and
    logged, and it is used again as soon as a matching descriptor arrives. Other sensors on the port go on.
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        try:
            import serial  # noqa: F401  (pyserial: fail at start, not in the reader thread)
        except ImportError:
            raise MissingDependencyError("serial sources need pyserial", hint="pip install 'edge-gmm[device]'") from None
        self.url, self.bridge_options = bridge_args(self.spec)
        self.reader = None  # the open BridgeReader, for its stats
        self.masked: dict[str, str] = {}  # bundle modality -> why its chunks are dropped now
        self.mismatches = 0  # times a sensor went from matching the bundle to not
        self.masked_chunks = 0

    @property
    def counts(self) -> dict:
        """For the loop's metrics: descriptor mismatches and the link's error counters."""
        link = self.reader.stats() if self.reader is not None else {}
        return {"descriptor_mismatch": self.mismatches, "masked": sorted(self.masked),
                "masked_chunks": self.masked_chunks, **{k: link[k] for k in LINK_ERRORS if k in link}}

    def stream(self, stop: threading.Event):
        from edge_gmm.data.format import SensorChunk
        from edge_gmm.firmware_bridge.source import open_bridge

        reader = open_bridge(self.url, reconnect=False, **self.bridge_options)
        reader.start()  # DeviceError when the port cannot be opened: the driver retries
        self.reader = reader
        try:
            while not stop.is_set():
                chunks = reader.chunks(timeout=READ_TIMEOUT_S)
                described = {s.name: s for s in reader.sensors()} if chunks else {}
                for chunk in chunks:
                    name = self.spec.rename.get(chunk.modality, chunk.modality)
                    sensor = self.sensors.get(name)
                    if sensor is None:
                        continue  # a sensor the bundle does not use
                    if not self._fits(name, sensor, chunk, described.get(chunk.modality)):
                        continue
                    yield chunk if name == chunk.modality else SensorChunk(name, chunk.t, chunk.x)
                if not reader.connected():
                    raise DeviceError(f"{self.spec.uri}: {reader.last_error or 'port lost'}")
        finally:
            reader.stop()

    def _fits(self, name: str, sensor, chunk, described) -> bool:
        """Whether a chunk fits the bundle's `name`; masks the modality while it does not, unmasks when it does."""
        problem = _mismatch(sensor, tuple(chunk.x.shape[1:]), described)
        if problem is None:
            if self.masked.pop(name, None) is not None:
                log.warning("%s: %r matches the bundle again; used again", self.spec.uri, name)
            return True
        self.masked_chunks += 1
        if name not in self.masked:
            self.masked[name] = problem
            self.mismatches += 1
            log.warning("%s: the MCU now describes %r as %s; masked until it matches again (descriptor_mismatch %d)",
                        self.spec.uri, chunk.modality, problem, self.mismatches)
        return False


def bridge_args(spec: SourceSpec) -> tuple[str, dict]:
    """(url, open_bridge options) of a serial or socket URI: baud, format, and for Edge Impulse forwarder
    lines, which carry no names or rates, the `frequency` and `name` to give them (else detected)."""
    fmt = spec.option("format", "frames")
    options = {"format": fmt, "baudrate": spec.option("baud", 921600, int)}
    if fmt == "ei-forwarder":
        options.update({k: v for k, v in (("frequency", spec.option("frequency", None, float)),
                                          ("name", spec.option("name"))) if v is not None})
    return (f"socket://{spec.target}" if spec.scheme == "socket" else spec.target), options


def _mismatch(sensor, shape: tuple, described) -> str | None:
    """What keeps chunks of `shape` (from a sensor the MCU describes as `described`) out of `sensor`'s windows."""
    if shape != sensor.sample_shape:
        return f"samples of shape {shape}, the bundle needs {sensor.sample_shape}"
    if described is not None and abs(described.rate - sensor.rate) > RATE_TOLERANCE * sensor.rate:
        return f"{described.rate:g} Hz, the bundle needs {sensor.rate:g} Hz"
    return None


SOURCES.add("serial", SerialSource)
SOURCES.add("socket", SerialSource)


# What a microphone or camera records as when neither the URI (`?rate=`, `?size=`) nor `record --like` says.
AUDIO_DEFAULTS = {"rate": 16000.0}
CAMERA_DEFAULTS = {"rate": 5.0, "size": (96, 96)}
MAX_PACE_WAIT_S = 1.0  # a clockless device is held back this long at most per block


@SOURCES.register("audio")
class AudioSource(Source):
    """`audio://default[?device=NAME&block=0.05&rate=16000]`: one mono microphone through sounddevice (PortAudio).

    Blocks are stamped contiguously (the device counts samples): recorded audio never overlaps itself.
    A device with no clock of its own (ALSA's `file` or `null` plugin) hands out blocks as fast as they are
    asked for; the callback then waits until the host clock reaches the block's end, so it runs in real time.
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _need("sounddevice", "audio sources need sounddevice (PortAudio)",
              "pip install 'edge-gmm[audio]' (and apt install libportaudio2), or replay audio: replay://DATASET?modalities=audio")
        _check_declared(self)

    @staticmethod
    def declared(spec: SourceSpec, name: str) -> tuple[SensorSpec, list[str]]:
        """The sensor the URI describes, and the options that fell back to AUDIO_DEFAULTS."""
        rate = spec.option("rate", AUDIO_DEFAULTS["rate"], float)
        return SensorSpec(name, "audio", rate), [k for k in AUDIO_DEFAULTS if k not in spec.options]

    def stream(self, stop: threading.Event):
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the wheel is there but libportaudio is not
            raise MissingDependencyError(
                f"audio source needs sounddevice and PortAudio ({e})",
                hint="pip install 'edge-gmm[audio]' (and apt install libportaudio2), or replay audio: replay://DATASET?modalities=audio",
            ) from None
        name, sensor = _single(self)
        device = None if self.spec.target in ("", "default") else self.spec.option("device", self.spec.target)
        block = max(1, int(sensor.rate * self.spec.option("block", 0.05, float)))
        stamps = SampleClock(float(sensor.rate), lag_s=2 * block / sensor.rate)
        arrived: queue.Queue = queue.Queue(maxsize=64)

        def callback(indata, frames, _time, _status):  # PortAudio thread: stamp, pace, hand over
            t = stamps.stamp(self.clock.now(), frames)
            ahead = t[-1] - self.clock.now()
            if ahead > 0:
                time.sleep(min(ahead, MAX_PACE_WAIT_S))
            try:
                arrived.put_nowait((t, indata[:, 0].astype(np.float32, copy=True)))
            except queue.Full:
                pass  # the loop's own drop counters cover a stalled consumer

        from edge_gmm.data.format import SensorChunk

        try:
            stream = sd.InputStream(samplerate=float(sensor.rate), channels=1, dtype="float32", blocksize=block,
                                    device=device, callback=callback)
        except Exception as e:  # PortAudioError has no stable import path across versions
            raise DeviceError(f"audio: cannot open input device {device or 'default'!r}: {e}") from None
        with stream:
            while not stop.is_set():
                try:
                    t, x = arrived.get(timeout=READ_TIMEOUT_S)
                except queue.Empty:
                    continue
                yield SensorChunk(name, t, x)


class SampleClock:
    """Host-clock times for consecutive blocks of a device sampling at `rate`: each block starts where the
    last ended, so times never overlap; when the device falls behind by more than `lag_s` (lost blocks, a
    slow clock) it is re-anchored at the block's arrival, leaving a gap rather than squeezing samples."""

    def __init__(self, rate: float, lag_s: float):
        self.rate = rate
        self.lag_s = lag_s
        self.next_t: float | None = None

    def stamp(self, arrival: float, n: int) -> np.ndarray:
        start = arrival - n / self.rate
        if self.next_t is None or start - self.next_t > self.lag_s:
            self.next_t = start
        t = self.next_t + np.arange(n) / self.rate
        self.next_t += n / self.rate
        return t


@SOURCES.register("camera")
class CameraSource(Source):
    """`camera://0` (a V4L2 index or /dev/videoN), `camera://clip.avi[?loop=1]` (a video file), a stream URL
    (`camera://rtsp://...`), or a GStreamer pipeline ending in appsink (Jetson CSI); `?rate=5&size=96x96`.

    Frames are resized to the bundle's H×W, RGB, float32 in [0, 1], and taken at the sensor's rate. A live
    camera is read as fast as it delivers and frames between the rate's ticks are skipped. A video file
    plays in real time on its own frame rate, sampled at the sensor's; it ends the source at its end
    (no reconnect), or starts again with `?loop=1`.
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _need("cv2", "camera sources need OpenCV",
              "pip install 'edge-gmm[camera]' (on a Jetson use JetPack's OpenCV, which has GStreamer)")
        _check_declared(self)
        if self.is_file:
            if not os.path.isfile(self.spec.target):
                raise ConfigError(f"camera: no such video file {self.spec.target!r}",
                                  hint="give a file that exists, a device index (camera://0) or /dev/videoN")
            self.reconnects = False  # a file that ended plays again only with ?loop=1

    @property
    def is_file(self) -> bool:
        t = self.spec.target
        return self.spec.scheme == "camera" and not t.isdigit() and not t.startswith("/dev/") and "://" not in t

    @staticmethod
    def declared(spec: SourceSpec, name: str) -> tuple[SensorSpec, list[str]]:
        """The sensor the URI describes, and the options that fell back to CAMERA_DEFAULTS."""
        rate = spec.option("rate", CAMERA_DEFAULTS["rate"], float)
        height, width = _frame_size(spec) or CAMERA_DEFAULTS["size"]
        return SensorSpec(name, "camera", rate, height=height, width=width), [k for k in CAMERA_DEFAULTS if k not in spec.options]

    def _open_capture(self, cv2):
        target = self.spec.target
        if self.spec.scheme == "gstreamer":
            return cv2.VideoCapture(target, cv2.CAP_GSTREAMER)
        return cv2.VideoCapture(int(target) if target.isdigit() else target)

    def stream(self, stop: threading.Event):
        try:
            import cv2
        except ImportError:
            raise MissingDependencyError(
                "camera source needs OpenCV",
                hint="pip install 'edge-gmm[camera]' (on a Jetson use the JetPack OpenCV, which has GStreamer)",
            ) from None
        from edge_gmm.data.format import SensorChunk

        name, sensor = _single(self)
        cap = self._open_capture(cv2)
        if not cap.isOpened():
            raise DeviceError(f"camera: cannot open {self.spec.target!r}")
        frames = self._file_frames(cap, cv2, sensor, stop) if self.is_file else self._live_frames(cap, sensor, stop)
        try:
            for frame, t in frames:
                rgb = cv2.cvtColor(cv2.resize(frame, (sensor.width, sensor.height)), cv2.COLOR_BGR2RGB)
                x = (rgb.astype(np.float32) / 255.0)[None]  # (1, H, W, 3)
                yield SensorChunk(name, np.array([t]), x)
        finally:
            cap.release()

    def _live_frames(self, cap, sensor, stop: threading.Event):
        """(BGR frame, host time) at most at the sensor's rate, as fast as the device gives them."""
        period = 1.0 / sensor.rate
        next_due = self.clock.now()
        while not stop.is_set():
            ok, frame = cap.read()
            if not ok:
                raise DeviceError(f"camera {self.spec.target!r}: no frame (unplugged or pipeline ended)")
            now = self.clock.now()
            if now < next_due:
                continue  # faster than the sensor rate the model was trained at: skip
            next_due = max(next_due + period, now)
            yield frame, now

    def _file_frames(self, cap, cv2, sensor, stop: threading.Event):
        """(BGR frame, host time) on the sensor's tick k: the file's frame showing at k / rate seconds, held
        back until the host clock reaches that tick. Returns at the end of the file unless ?loop=1."""
        fps = cap.get(cv2.CAP_PROP_FPS) or sensor.rate  # 0 when the container does not say
        loop = self.spec.flag("loop")
        t0 = self.clock.now()
        frame, read, rewound = None, 0, False  # read: frames so far, over all loops
        for k in itertools.count():
            while frame is None or read <= k / sensor.rate * fps:  # read up to the frame showing at tick k
                ok, f = cap.read()
                if ok:
                    frame, read, rewound = f, read + 1, False
                elif loop and read and not rewound and cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                    rewound = True  # a file that fails right after a rewind ends instead of spinning
                else:
                    return
            due = t0 + k / sensor.rate
            if stop.wait(max(0.0, due - self.clock.now())):
                return
            yield frame, due


SOURCES.add("gstreamer", CameraSource)


def _check_declared(src: Source) -> None:
    """A `?rate=` / `?size=` the URI gives must be the sensor's (the bundle's in `run`): ConfigError otherwise."""
    name, sensor = _single(src)
    declared, _ = type(src).declared(src.spec, name)
    for key, have, want, shown in (("rate", declared.rate, sensor.rate, f"{sensor.rate:g} Hz"),
                                   ("size", declared.sample_shape, sensor.sample_shape, f"{sensor.height}x{sensor.width}")):
        if key in src.spec.options and have != want:
            raise ConfigError(f"source {src.spec.uri!r}: {key}={src.spec.options[key]} differs from {name!r}, which is {shown}",
                              hint=f"drop ?{key}= to use the model's, or record and train at this {key}")


def _frame_size(spec: SourceSpec) -> tuple[int, int] | None:
    """`?size=HxW` as (height, width); None when not given."""
    text = spec.options.get("size")
    if text is None:
        return None
    h, sep, w = text.lower().partition("x")
    if sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0:
        return int(h), int(w)
    raise ConfigError(f"source {spec.uri!r}: size={text!r} is not HEIGHTxWIDTH, e.g. size=96x96")


def _single(src: Source):
    """(name, spec) of the one modality a microphone or camera feeds."""
    if len(src.sensors) == 1:
        return next(iter(src.sensors.items()))
    raise ConfigError(f"source {src.spec.uri!r} feeds one modality, but was given {', '.join(src.sensors)}",
                      hint="map it to one modality in the sources file, e.g. 'audio: audio://default'")


def _need(module: str, what: str, hint: str) -> None:
    """Fail when the source is built (before the broker is contacted), not later in its thread."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(what, hint=hint)
