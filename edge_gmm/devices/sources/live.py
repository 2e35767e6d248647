"""Live hardware sources: the MCU over serial (firmware_bridge), a microphone, a camera.

Each imports its engine only when it opens, and says what to install when the engine is absent.
Samples are stamped on the host clock when they arrive (the serial bridge maps MCU time itself).
"""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from edge_gmm.errors import ConfigError, DeviceError, MissingDependencyError
from edge_gmm.devices.sources import SOURCES, Source

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
        self.baud = self.spec.option("baud", 921600, int)
        self.format = self.spec.option("format", "frames")
        # Edge Impulse forwarder lines carry no names or rates: `frequency` and `name` say them (else detected)
        self.forwarder = {k: v for k, v in (("frequency", self.spec.option("frequency", None, float)),
                                            ("name", self.spec.option("name"))) if v is not None}
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

    def _bridge_url(self) -> str:
        return f"socket://{self.spec.target}" if self.spec.scheme == "socket" else self.spec.target

    def stream(self, stop: threading.Event):
        from edge_gmm.data.format import SensorChunk
        from edge_gmm.firmware_bridge.source import open_bridge

        reader = open_bridge(self._bridge_url(), format=self.format, baudrate=self.baud, reconnect=False,
                             **(self.forwarder if self.format == "ei-forwarder" else {}))
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


def _mismatch(sensor, shape: tuple, described) -> str | None:
    """What keeps chunks of `shape` (from a sensor the MCU describes as `described`) out of `sensor`'s windows."""
    if shape != sensor.sample_shape:
        return f"samples of shape {shape}, the bundle needs {sensor.sample_shape}"
    if described is not None and abs(described.rate - sensor.rate) > RATE_TOLERANCE * sensor.rate:
        return f"{described.rate:g} Hz, the bundle needs {sensor.rate:g} Hz"
    return None


SOURCES.add("serial", SerialSource)
SOURCES.add("socket", SerialSource)


@SOURCES.register("audio")
class AudioSource(Source):
    """`audio://default[?device=NAME&block=0.05]`: one mono microphone through sounddevice (PortAudio)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _need("sounddevice", "audio sources need sounddevice (PortAudio)",
              "pip install 'edge-gmm[audio]' (and apt install libportaudio2), or replay audio: replay://DATASET?modalities=audio")
        _single(self)

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
        rate = float(sensor.rate)
        arrived: queue.Queue = queue.Queue(maxsize=64)

        def callback(indata, frames, _time, _status):  # PortAudio thread: stamp and hand over, nothing else
            t_end = self.clock.now()
            t = t_end - (np.arange(frames, 0, -1) - 1) / rate
            try:
                arrived.put_nowait((t, indata[:, 0].astype(np.float32, copy=True)))
            except queue.Full:
                pass  # the loop's own drop counters cover a stalled consumer

        from edge_gmm.data.format import SensorChunk

        try:
            stream = sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=block,
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


@SOURCES.register("camera")
class CameraSource(Source):
    """`camera://0` (a V4L2 index or /dev/videoN) or a GStreamer pipeline ending in appsink (Jetson CSI).

    Frames are resized to the bundle's H×W, RGB, float32 in [0, 1], and taken at the sensor's rate.
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _need("cv2", "camera sources need OpenCV",
              "pip install 'edge-gmm[camera]' (on a Jetson use JetPack's OpenCV, which has GStreamer)")
        _single(self)

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
        period = 1.0 / sensor.rate
        next_due = self.clock.now()
        try:
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    raise DeviceError(f"camera {self.spec.target!r}: no frame (unplugged or pipeline ended)")
                now = self.clock.now()
                if now < next_due:
                    continue  # faster than the sensor rate the model was trained at: skip
                next_due = max(next_due + period, now)
                rgb = cv2.cvtColor(cv2.resize(frame, (sensor.width, sensor.height)), cv2.COLOR_BGR2RGB)
                x = (rgb.astype(np.float32) / 255.0)[None]  # (1, H, W, 3)
                yield SensorChunk(name, np.array([now]), x)
        finally:
            cap.release()


SOURCES.add("gstreamer", CameraSource)


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
