"""Serial bridge benchmark: decoder throughput vs a 921600-baud line, frame loss over a real pty at
921600-baud pacing, and frames lost per injected corruption (resync).

    .venv/bin/python benchmarks/bench_serial.py                 # short: 4 MB decode, 5 s pty
    .venv/bin/python benchmarks/bench_serial.py --seconds 60    # the 60 s loss target
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import md_table, publish  # noqa: E402
from edge_gmm.firmware_bridge.decoder import StreamDecoder  # noqa: E402
from edge_gmm.firmware_bridge.link import FrameLink  # noqa: E402
from edge_gmm.firmware_bridge.protocol import (  # noqa: E402
    Descriptor,
    Frame,
    FrameType,
    SampleFormat,
    descriptor_frame,
    encode_frame,
    samples_frame,
    time_sync_payload,
)
from edge_gmm.firmware_bridge.source import open_bridge  # noqa: E402
from edge_gmm.firmware_bridge.transports import PtyTransport  # noqa: E402

LINE_BPS = 921600 / 10  # 8N1: 10 bits per byte -> 92,160 bytes/s
IMU = Descriptor(1, "imu", "imu", 200.0, 6, SampleFormat.INT16, 0.001, [])


class Wire:
    """Frames as an MCU sends them: an imu frame (10 samples x 6 int16) most of the time, sync now and then."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.seq = 0
        self.t_us = 0

    def next(self) -> bytes:
        s, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        self.t_us += 50_000
        if s % 50 == 0:
            return encode_frame(descriptor_frame(IMU, s, self.t_us))
        if s % 25 == 0:
            return encode_frame(Frame(FrameType.TIME_SYNC, 0, s, self.t_us, payload=time_sync_payload(0)))
        values = self.rng.normal(0, 2000, (10, 6)).astype(np.int16)
        return encode_frame(samples_frame(1, values, SampleFormat.INT16, s, self.t_us))


def throughput(mb: float) -> list[dict]:
    w = Wire()
    frames = []
    size = 0
    while size < mb * 1e6:
        frames.append(w.next())
        size += len(frames[-1])
    data = b"".join(frames)
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    rows = []
    for name, make in (("decoder (frames only)", StreamDecoder), ("decoder + SensorChunks", FrameLink)):
        obj = make()
        feed = (lambda c, o=obj: o.feed(c)) if name.startswith("decoder (") else (lambda c, o=obj: o.feed(c, time.monotonic()))
        t0 = time.perf_counter()
        for c in chunks:
            feed(c)
        dt = time.perf_counter() - t0
        rate = len(data) / dt
        rows.append({"measure": f"{name} throughput, 1 core", "value": f"{rate / 1e6:.2f} MB/s",
                     "vs 921600 baud": f"{rate / LINE_BPS:.1f}x", "target": ">= 10x"})
    return rows


def pty_loss(seconds: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-serial-"))
    tr = PtyTransport(tmp / "tty")
    reader = open_bridge(str(tmp / "tty"), describe=False).start()
    sent = [0]
    stop = threading.Event()

    def writer():
        w = Wire(1)
        t0 = time.monotonic()
        nbytes = 0
        while not stop.is_set() and time.monotonic() - t0 < seconds:
            f = w.next()
            tr.write(f)
            nbytes += len(f)
            sent[0] += 1
            ahead = nbytes / LINE_BPS - (time.monotonic() - t0)  # pace the bytes like a 921600-baud UART
            if ahead > 0:
                time.sleep(ahead)

    th = threading.Thread(target=writer)
    th.start()
    while th.is_alive():
        reader.chunks(timeout=0.1)
    time.sleep(0.5)
    reader.chunks(timeout=0.1)
    s = reader.stats()
    reader.stop()
    tr.close()
    return {"sent": sent[0], "received": s["frames"], "lost": sent[0] - s["frames"], "gaps": s["gaps"],
            "crc_errors": s["crc_errors"], "overruns": tr.overruns, "bytes": s["bytes_in"]}


def resync(n: int = 2000, on_delimiter: bool = False) -> float:
    """Flip one bit in every 10th frame (inside it, or its 0x00 delimiter); frames lost per flip."""
    w = Wire(2)
    data = bytearray()
    hits = 0
    for i in range(n):
        f = bytearray(w.next())
        if i % 10 == 5:
            f[-1 if on_delimiter else len(f) // 2] ^= 0x10
            hits += 1
        data += f
    dec = StreamDecoder()
    got = dec.feed(bytes(data))
    return (n - len(got)) / hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="pty run length (target: 60)")
    ap.add_argument("--mb", type=float, default=4.0, help="MB to decode for throughput")
    ap.add_argument("--no-publish", action="store_true")
    args = ap.parse_args()
    rows = throughput(args.mb)
    loss = pty_loss(args.seconds)
    rows.append({"measure": f"frames lost over a pty, 921600-baud pacing, {args.seconds:g} s",
                 "value": f"{loss['lost']} of {loss['sent']} (gaps {loss['gaps']}, crc {loss['crc_errors']})",
                 "vs 921600 baud": f"{loss['bytes'] / args.seconds / LINE_BPS:.2f}x line", "target": "0 over 60 s"})
    rows.append({"measure": "frames lost per bit flip inside a frame (resync)", "value": f"{resync():.2f}",
                 "vs 921600 baud": "", "target": "1 (the hit frame only)"})
    rows.append({"measure": "frames lost per bit flip on a 0x00 delimiter", "value": f"{resync(on_delimiter=True):.2f}",
                 "vs 921600 baud": "", "target": "2 (the two frames it joins)"})
    cmd = "python benchmarks/bench_serial.py" + (f" --seconds {args.seconds:g}" if args.seconds != 5 else "")
    table = md_table(rows)
    publish("serial", "Serial bridge: decoder throughput, pty loss, resync", cmd, table, write=not args.no_publish)


if __name__ == "__main__":
    main()
