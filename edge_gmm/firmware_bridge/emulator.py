"""The virtual MCU: streams sensors as frames at their real rates over a pty or a socket.

Signals come from the synthetic scenario (edge_gmm.data.synth) or a recorded dataset's session, and are
looped. It answers host commands (start, stop, set rate, describe), sends descriptors, time sync and
heartbeats like the C example does, and can inject faults (faults.py). `--format ei-forwarder` speaks
Edge Impulse data-forwarder text lines instead of frames.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_gmm.errors import ConfigError
from edge_gmm.firmware_bridge.decoder import StreamDecoder
from edge_gmm.firmware_bridge.faults import FaultInjector
from edge_gmm.firmware_bridge.protocol import (
    ALL_SENSORS,
    Command,
    Descriptor,
    Frame,
    FrameType,
    SampleFormat,
    descriptor_payload,
    encode_frame,
    heartbeat_payload,
    parse_command,
    samples_payload,
    time_sync_payload,
)

META_PERIOD_S = 1.0  # descriptors + heartbeat
SYNC_PERIOD_S = 0.5
FRAME_PERIOD_S = 0.05  # a samples frame carries about this much signal (imu 200 Hz -> 10 samples)
INT16_HEADROOM = 30000  # int16 scale chosen so the largest |value| maps to this many counts


@dataclass
class Feed:
    """One sensor of the virtual MCU: x float32 [N, channels] played in a loop at `rate`."""

    sensor: int
    name: str
    kind: str
    rate: float
    x: np.ndarray
    units: list[str] = field(default_factory=list)
    fmt: int = SampleFormat.INT16
    enabled: bool = True
    next_n: int = 0  # index of the next sample to send (counts up forever; the data loops)
    t0_us: float = 0.0  # MCU time of sample next_n's epoch, re-based on a rate change
    n0: int = 0
    lost: tuple[float, float] | None = None  # (from_s, to_s) of MCU time: frames due then are dropped unsent

    def __post_init__(self):
        self.set_signal(self.x)
        self.per_frame = max(1, int(round(self.rate * FRAME_PERIOD_S)))

    def set_signal(self, x) -> None:
        """What the sensor plays from now on: float32 [N, channels] (another channel count re-describes it)."""
        self.x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        peak = float(np.max(np.abs(self.x))) if self.x.size else 1.0
        self.scale = (peak / INT16_HEADROOM if peak > 0 else 1.0) if self.fmt == SampleFormat.INT16 else 1.0

    def descriptor(self) -> Descriptor:
        return Descriptor(self.sensor, self.name, self.kind, self.rate, self.x.shape[1], self.fmt, self.scale, self.units)

    def sample_us(self, n: int) -> float:
        return self.t0_us + (n - self.n0) * 1e6 / self.rate

    def take(self, n: int) -> np.ndarray:
        idx = (self.next_n + np.arange(n)) % len(self.x)
        self.next_n += n
        return self.x[idx]

    def raw(self, values: np.ndarray) -> np.ndarray:
        if self.fmt == SampleFormat.INT16:
            return np.clip(np.round(values / self.scale), -32768, 32767).astype(np.int16)
        return values


def feeds_from_session(session, names=("imu", "env"), sensors=None) -> list[Feed]:
    """Feeds for the named streams of a Session (synthetic or recorded); sensor ids 1, 2, ..."""
    specs = {s.name: s for s in (sensors or [])}
    feeds = []
    for i, name in enumerate(names):
        if name not in session.streams:
            raise ConfigError(f"session {session.id!r} has no {name!r} stream; it has {sorted(session.streams)}")
        st = session.streams[name]
        spec = specs.get(name)
        rate = spec.rate if spec else float(round((len(st.t) - 1) / max(st.t[-1] - st.t[0], 1e-9)))
        kind = spec.kind if spec else ("imu" if name == "imu" else "timeseries")
        units = list(spec.units) if spec else []
        feeds.append(Feed(i + 1, name, kind, rate, np.nan_to_num(st.x), units))
    return feeds


def synthetic_feeds(label: str = "normal", seed: int = 0, duration_s: float = 20.0) -> list[Feed]:
    from edge_gmm.data import synth

    sc = synth.get_scenario("machine-health")
    session = sc.session(label, seed, duration_s)
    return feeds_from_session(session, sensors=sc.sensors())


def dataset_feeds(path: str, session_id: str | None = None, names=("imu", "env")) -> list[Feed]:
    from edge_gmm.data.format import Dataset

    ds = Dataset.open(path)
    ids = ds.session_ids()
    sid = session_id or ids[0]
    if sid not in ids:
        raise ConfigError(f"{path}: no session {sid!r}; it has {', '.join(ids[:10])}")
    names = [n for n in names if n in {s.name for s in ds.sensors}]
    return feeds_from_session(ds.load_session(sid, modalities=names), names, ds.sensors)


class VirtualMcu:
    def __init__(self, feeds: list[Feed], transport, *, faults: FaultInjector | None = None,
                 clock_start_us: int = 0, text: bool = False, unplug_every_s: float = 5.0, unplug_s: float = 1.0,
                 on_replug=None):
        self.feeds = feeds
        self.by_id = {f.sensor: f for f in feeds}
        self.transport = transport
        self.faults = faults or FaultInjector([])
        self.clock_start_us = int(clock_start_us)
        self.text = text  # Edge Impulse data-forwarder lines (first feed only)
        self.streaming = True
        self.unplug_every_s, self.unplug_s = unplug_every_s, unplug_s
        self.on_replug = on_replug
        self.seq = 0
        self.sent = {"frames": 0, "bytes": 0, "samples": 0, "unplugs": 0, "commands": 0}
        self._rx = StreamDecoder()
        self._rx_text = bytearray()
        self._t0 = 0.0
        self._soon: deque = deque()  # actions from other threads, run by the MCU's own loop (one writer)

    def inject(self, *frames: Frame) -> None:
        """Send crafted frames (a corrupt timestamp, a lying descriptor) from the MCU's loop, in sequence."""
        for f in frames:
            self._soon.append(lambda f=f: self._send(f))

    def redescribe(self, sensor: int, x) -> None:
        """The firmware changes a sensor (e.g. its channel count): new signal, descriptors sent at once."""
        def change():
            self.by_id[sensor].set_signal(x)
            self.send_descriptors()
        self._soon.append(change)

    # MCU clock: microseconds since boot (plus clock_start_us, to exercise wrap-around), as a u32 would hold it
    def now_us(self) -> int:
        return self.clock_start_us + int((time.monotonic() - self._t0) * 1e6)

    def run(self, seconds: float | None = None, stop_event=None) -> dict:
        self._t0 = time.monotonic()
        for f in self.feeds:
            f.t0_us, f.n0 = float(self.clock_start_us), f.next_n
        next_meta = next_sync = 0.0
        next_unplug = self.unplug_every_s if self.faults.unplug else float("inf")
        while True:
            now = time.monotonic() - self._t0
            if (seconds is not None and now >= seconds) or (stop_event is not None and stop_event.is_set()):
                break
            if now >= next_unplug:
                self._unplug()
                next_unplug += self.unplug_every_s
                continue
            self._poll_commands()
            while self._soon:
                self._soon.popleft()()
            if not self.text:
                if now >= next_meta:
                    self.send_descriptors()
                    self._send(Frame(FrameType.HEARTBEAT, 0, t_us=self.now_us(), payload=heartbeat_payload(self.transport.overruns)))
                    next_meta += META_PERIOD_S
                if now >= next_sync:
                    t = self.now_us()
                    self._send(Frame(FrameType.TIME_SYNC, 0, t_us=t, payload=time_sync_payload(t >> 32)))
                    next_sync += SYNC_PERIOD_S
            due = [self._send_samples(f) for f in self.active_feeds()]
            wake = min([d for d in due if d is not None] + [next_sync, next_meta, next_unplug, now + 0.05])
            if seconds is not None:
                wake = min(wake, seconds)
            delay = wake - (time.monotonic() - self._t0)
            if delay > 0:
                time.sleep(min(delay, 0.05))
        return self.summary()

    def active_feeds(self) -> list[Feed]:
        if not self.streaming:
            return []
        return self.feeds[:1] if self.text else [f for f in self.feeds if f.enabled]

    def summary(self) -> dict:
        return {**self.sent, "faults": dict(self.faults.counts), "tx_overruns": self.transport.overruns}

    def send_descriptors(self) -> None:
        for f in self.feeds:
            self._send(Frame(FrameType.DESCRIPTOR, f.sensor, t_us=self.now_us(), payload=descriptor_payload(f.descriptor())))

    # ---------------------------------------------------------------- internals

    def _send_samples(self, f: Feed) -> float | None:
        """Send every full frame of `f` whose last sample is due; return when the next one is due (s since start)."""
        while True:
            last = f.next_n + f.per_frame - 1
            due_s = (f.sample_us(last) - self.clock_start_us) * 1e-6
            if due_s > time.monotonic() - self._t0:
                return due_s
            t_first = int(f.sample_us(f.next_n))
            values = f.take(f.per_frame)
            if f.lost is not None and f.lost[0] <= due_s < f.lost[1]:  # a sensor glitch: these samples never go out
                self.sent["lost_samples"] = self.sent.get("lost_samples", 0) + len(values)
                continue
            self.sent["samples"] += len(values)
            if self.text:
                lines = "".join(",".join(f"{v:.5g}" for v in row) + "\r\n" for row in values)
                self._write(lines.encode("ascii"))
                continue
            payload = samples_payload(f.raw(values), f.fmt)
            self._send(Frame(FrameType.SAMPLES, f.sensor, t_us=t_first, format=f.fmt, count=len(values), payload=payload))

    def _send(self, frame: Frame) -> None:
        frame.seq = self.seq
        frame.t_us &= 0xFFFFFFFF
        self.seq = (self.seq + 1) & 0xFFFF
        data = self.faults.apply(encode_frame(frame), frame.seq)
        self.sent["frames"] += 1
        self._write(data)

    def _write(self, data: bytes) -> None:
        self.sent["bytes"] += self.transport.write(data)

    def _poll_commands(self) -> None:
        data = self.transport.read()
        if not data:
            return
        if self.text:
            self._rx_text += data
            while b"\n" in self._rx_text:
                line, _, rest = bytes(self._rx_text).partition(b"\n")
                self._rx_text = bytearray(rest)
                cmd = line.strip().upper()
                if cmd == b"AT+STARTDATAFWD":
                    self.streaming = True
                elif cmd == b"AT+STOPDATAFWD":
                    self.streaming = False
            return
        for frame in self._rx.feed(data):
            if frame.type != FrameType.COMMAND:
                continue
            try:
                cmd, value = parse_command(frame)
            except ValueError:
                continue
            self.sent["commands"] += 1
            targets = self.feeds if frame.sensor == ALL_SENSORS else [f for f in self.feeds if f.sensor == frame.sensor]
            if cmd == Command.START:
                self.streaming = True
                for f in targets:
                    f.enabled = True
                self._rebase(targets)
            elif cmd == Command.STOP:
                for f in targets:
                    f.enabled = False
                self.streaming = any(f.enabled for f in self.feeds)
            elif cmd == Command.SET_RATE and value > 0:
                for f in targets:
                    f.rate = float(value)
                    f.per_frame = max(1, int(round(f.rate * FRAME_PERIOD_S)))
                self._rebase(targets)
                self.send_descriptors()
            elif cmd == Command.DESCRIBE:
                self.send_descriptors()

    def _rebase(self, feeds: list[Feed]) -> None:
        """Sample times continue from now (after a stop or a rate change)."""
        for f in feeds:
            f.t0_us, f.n0 = float(self.now_us()), f.next_n

    def _unplug(self) -> None:
        self.transport.unplug()
        self.sent["unplugs"] += 1
        time.sleep(self.unplug_s)
        self.transport.replug()
        self._rx = StreamDecoder()
        self._rebase(self.feeds)  # samples taken while unplugged are lost, as on a real board that kept running
        if self.on_replug is not None:
            self.on_replug(self.transport)
