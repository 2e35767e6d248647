"""A background reader on pyserial's `serial_for_url`: a device path, a pty path, `socket://host:port`,
`loop://`. It reconnects with backoff when the port disappears (USB unplug), and hands SensorChunks to the
caller through a bounded queue (when the consumer stalls, the oldest chunks go and are counted).

Transport errors (the port went away) and decoding bugs are kept apart (STYLE.md #5): the first makes the
thread reconnect, the second is counted in `stats()["internal_errors"]` and the reading goes on.
"""

from __future__ import annotations

import queue
import select
import threading
import time
from collections import defaultdict
from typing import Any

from edge_gmm.config import SensorSpec
from edge_gmm.data.format import SensorChunk
from edge_gmm.errors import ConfigError, DeviceError
from edge_gmm.firmware_bridge.forwarder import START_COMMAND, STOP_COMMAND, ForwarderLink
from edge_gmm.firmware_bridge.link import FrameLink
from edge_gmm.firmware_bridge.protocol import ALL_SENSORS, Command, Frame, FrameType, command_payload, encode_frame
from edge_gmm.registry import Registry

READ_WAIT_S = 0.05  # longest a read blocks, so stop() is honoured promptly
LINK_FORMATS: Registry = Registry("bridge format")
LINK_FORMATS.add("frames", lambda **kw: FrameLink())
LINK_FORMATS.add(
    "ei-forwarder",
    lambda **kw: ForwarderLink(kw.get("frequency"), kw.get("name"), kw.get("kind"), kw.get("units")),
)


class BridgeReader:
    def __init__(
        self,
        url: str,
        *,
        format: str = "frames",
        baudrate: int = 921600,
        queue_size: int = 2000,
        reconnect: bool = True,
        wait_for_port: bool = False,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        describe: bool = True,
        at_commands: bool = False,
        frequency: float | None = None,
        name: str | None = None,
        kind: str | None = None,
        units: list[str] | None = None,
    ):
        self.url = url
        self.format = format
        self.baudrate = baudrate
        self.reconnect = reconnect
        self.wait_for_port = wait_for_port
        self.backoff_s = backoff_s
        self.describe = describe
        self.at_commands = at_commands
        self.link = LINK_FORMATS.get(format)(frequency=frequency, name=name, kind=kind, units=units)
        self._queue: queue.Queue[SensorChunk] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port = None
        self._write_lock = threading.Lock()
        self._seq = 0
        self._counts: dict[str, Any] = {
            "connects": 0, "disconnects": 0, "queue_dropped": 0, "internal_errors": 0, "chunks": 0,
        }
        self._per_sensor: dict[str, dict[str, float]] = defaultdict(lambda: {"samples": 0, "chunks": 0, "first": 0.0, "last": 0.0})
        self.last_error: str | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public

    def start(self) -> "BridgeReader":
        """Open the port (raising DeviceError if it cannot be opened, unless wait_for_port) and start reading."""
        if self._thread is not None:
            return self
        try:
            self._open()
        except DeviceError:
            if not self.wait_for_port:
                raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"bridge-reader {self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._port is not None and self.at_commands:
            self._write(STOP_COMMAND)
        self._close()

    def __enter__(self) -> "BridgeReader":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def chunks(self, timeout: float = 0.1) -> list[SensorChunk]:
        """Every chunk ready now; waits up to `timeout` s for the first one. Chunks of one sensor are in order."""
        out = []
        try:
            out.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
            while True:
                out.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return out

    def sensors(self) -> list[SensorSpec]:
        return self.link.sensors()

    def connected(self) -> bool:
        return self._port is not None

    def stats(self) -> dict[str, Any]:
        s = self.link.stats.as_dict()
        s.update(self._counts)
        for key in ("undescribed", "bad_payload", "mcu_overruns", "commands_seen"):
            if hasattr(self.link, key):
                s[key] = getattr(self.link, key)
        if hasattr(self.link, "clock") and self.link.clock.ready():
            s["clock_drift_ppm"] = round(self.link.clock.drift_ppm, 1)
        with self._lock:
            s["sensors"] = {
                name: {
                    "samples": int(v["samples"]),
                    "chunks": int(v["chunks"]),
                    # arrival-based rate: what actually came over the wire per host second
                    "rate_hz": round((v["samples"] - v["first_n"]) / (v["last"] - v["first"]), 2) if v["last"] > v["first"] else 0.0,
                }
                for name, v in self._per_sensor.items()
            }
        s["last_error"] = self.last_error
        return s

    def send_command(self, command: int, sensor: int = ALL_SENSORS, value: float = 0.0) -> bool:
        """Send a host -> MCU command frame. Returns False when the port is not open."""
        frame = Frame(FrameType.COMMAND, sensor, self._seq, 0, payload=command_payload(command, value))
        self._seq = (self._seq + 1) & 0xFFFF
        return self._write(encode_frame(frame))

    # ---------------------------------------------------------------- thread

    def _open(self) -> None:
        import serial

        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_WAIT_S, write_timeout=0.5)
        except ValueError as e:  # unknown URL scheme or bad option: a user error, retrying will not help
            raise ConfigError(f"cannot open {self.url!r}: {e}", hint="use a device path, a pty path, socket://HOST:PORT or loop://") from None
        except (serial.SerialException, OSError) as e:
            raise DeviceError(
                f"cannot open serial port {self.url!r}: {e}",
                hint="check the path (ls /dev/tty*), that the board is plugged in, and that you may read it (dialout group)",
            ) from None
        self._port = port
        self.link.reset_link()
        self._counts["connects"] += 1
        if self.at_commands:
            self._write(START_COMMAND)
        if self.describe and self.format == "frames":
            self.send_command(Command.DESCRIBE)

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a port that vanished may raise anything; it is gone either way
                pass

    def _run(self) -> None:
        import serial

        delay = self.backoff_s[0]
        while not self._stop.is_set():
            if self._port is None:
                if not self.reconnect and self._counts["connects"] > 0:
                    return
                try:
                    self._open()
                    delay = self.backoff_s[0]
                except DeviceError as e:
                    self.last_error = str(e).splitlines()[0]
                    self._stop.wait(delay)  # backoff, cut short by stop()
                    delay = min(delay * 2, self.backoff_s[1])
                    continue
            try:
                data = _read_some(self._port)
            except (serial.SerialException, OSError) as e:
                self.last_error = f"port lost: {e}"
                self._counts["disconnects"] += 1
                self._close()
                continue
            if not data:
                continue
            now = time.monotonic()
            try:
                chunks = self.link.feed(data, now)
            except Exception as e:  # a bug in decoding, not the port: count it, keep the link alive
                self._counts["internal_errors"] += 1
                self.last_error = f"decoder: {type(e).__name__}: {e}"
                continue
            for c in chunks:
                self._deliver(c, now)

    def _deliver(self, c: SensorChunk, now: float) -> None:
        with self._lock:
            v = self._per_sensor[c.modality]
            if v["chunks"] == 0:
                v["first"], v["first_n"] = now, len(c)
            v["samples"] += len(c)
            v["chunks"] += 1
            v["last"] = now
        self._counts["chunks"] += 1
        try:
            self._queue.put_nowait(c)
        except queue.Full:
            try:
                self._queue.get_nowait()  # drop the oldest: a live consumer wants the newest data
            except queue.Empty:
                pass
            self._counts["queue_dropped"] += 1
            self._queue.put_nowait(c)

    def _write(self, data: bytes) -> bool:
        port = self._port
        if port is None:
            return False
        with self._write_lock:
            try:
                port.write(data)
                return True
            except Exception as e:  # a write to a vanished port; the reader thread will notice and reconnect
                self.last_error = f"write failed: {e}"
                return False


def _read_some(port) -> bytes:
    """What the port has now, waiting at most READ_WAIT_S for the first byte."""
    sock = getattr(port, "_socket", None)
    if sock is not None:
        # socket://: pyserial's read() raises on peer close and throws away the bytes it had collected
        # in that call (FIELD-NOTES). One recv() per call loses nothing: data first, then b"" at close.
        ready, _, _ = select.select([sock], [], [], READ_WAIT_S)
        if not ready:
            return b""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return b""
        if not data:
            import serial

            raise serial.SerialException("socket disconnected")
        return data
    n = port.in_waiting
    return port.read(n if n else 1)


