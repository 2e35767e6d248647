"""Fault injection against the real device loop: what is sent, received, lost or duplicated, and how the loop fares.

    .venv/bin/python benchmarks/bench_faults.py                 # every fault, ~3 min
    .venv/bin/python benchmarks/bench_faults.py --only disk-full,clock-jump --tries 1 --no-publish

Real parts throughout: `edge-gmm run` as its own process (so signals, exit codes and restarts are what a
supervisor sees), a durable mosquitto (killed with SIGKILL and restarted on the same port), a subscriber with a
persistent QoS 1 session that records every prediction's `seq`, a virtual MCU on a real pty, a small tmpfs for
the full disk, and the scripted MQTT 5 peer of tests/mqtt/mqtt5_peer.py for a broker that refuses publishes.

Counting: the device numbers predictions 0, 1, 2, ... (the spool keeps the counter across restarts), so
`sent` = highest seq + 1 once the last run has drained its spool, `lost` = seqs never received, `duplicated`
= deliveries beyond the first. The model is the loop tests' tiny fingerprint bundle: the loop, not the
model, is under test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "devices"))

from benchmarks.report import md_table, publish  # noqa: E402

DEVICE = "bench-faults"
TOPIC = f"edge-gmm/v1/{DEVICE}/prediction"
ROWS = ("broker-kill", "loop-kill", "both-kill", "disk-full", "refusing-broker", "clock-jump",
        "descriptor-change", "garbage-serial")


# ---------------------------------------------------------------- the parts


class Collector:
    """A persistent-session QoS 1 subscriber (survives broker restarts): every prediction payload, in arrival order."""

    def __init__(self, port: int, name: str):
        import paho.mqtt.client as mqtt

        self.payloads: list[dict] = []
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{name}", clean_session=False,
                             protocol=mqtt.MQTTv311)
        self.c.on_connect = lambda c, *_: c.subscribe(TOPIC, qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.1, 1.0)
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()
        deadline = time.monotonic() + 10
        while not self.c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # SUBACK

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.payloads.append(json.loads(msg.payload))

    def seqs(self) -> list[int]:
        with self._lock:
            return [p["seq"] for p in self.payloads]

    def wait_for(self, n_distinct: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(set(self.seqs())) < n_distinct and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class LoopProcess:
    """`edge-gmm run ... --json` in its own process; stop() sends SIGTERM and returns (exit code, summary)."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self.p = subprocess.Popen([sys.executable, "-m", "edge_gmm.cli.main", "run", *args, "--json"],
                                  stdout=subprocess.PIPE, stderr=log.open("a"), text=True, cwd=REPO)

    def kill(self) -> None:
        self.p.kill()
        self.p.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> tuple[int, dict]:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            out, _ = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
        try:
            return self.p.returncode, json.loads(out)
        except json.JSONDecodeError:
            return self.p.returncode, {}


class Bench:
    """Shared state of one row: a work dir, a bundle, a dataset, a broker, a collector, the loop's spool."""

    def __init__(self, root: Path, name: str, bundle: Path, dataset: Path):
        from tests.conftest import Mosquitto  # tests/conftest.py: the fixtures' durable mosquitto

        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.bundle, self.dataset = bundle, dataset
        self.spool = self.dir / "spool"
        self.broker = Mosquitto(self.dir / "broker").start()
        self.collector = Collector(self.broker.port, name)
        self.loops: list[LoopProcess] = []

    def loop(self, sources: str | None = None, mqtt: str | None = None, *extra: str) -> LoopProcess:
        args = ["--bundle", str(self.bundle), "--sources", sources or f"replay://{self.dataset}?loop=1",
                "--mqtt", mqtt or self.broker.url, "--device-id", DEVICE, "--spool-dir", str(self.spool), *extra]
        if sources is None:
            args += ["--speed", "8"]  # 16 windows/s of replay
        lp = LoopProcess(args, self.dir / "loop.log")
        self.loops.append(lp)
        return lp

    def tally(self, expected: int | None = None) -> dict:
        """sent/received/lost/duplicated from the collector (after waiting for `expected` distinct seqs)."""
        seqs = self.collector.seqs()
        sent = expected if expected is not None else (max(seqs) + 1 if seqs else 0)
        self.collector.wait_for(sent)
        seqs = self.collector.seqs()
        got = set(seqs)
        return {"sent": sent, "received": len(got), "lost": len(set(range(sent)) - got),
                "duplicated": len(seqs) - len(got)}

    def close(self) -> None:
        for lp in self.loops:
            if lp.p.poll() is None:
                lp.kill()
        self.collector.stop()
        self.broker.stop()


def outcome(rc: int, summary: dict) -> str:
    return f"exit {rc} ({summary.get('reason') or 'no summary'})"


# ---------------------------------------------------------------- network and process faults


def row_broker_kill(b: Bench, tries: int) -> dict:
    lp = b.loop()
    time.sleep(3)
    for _ in range(tries):
        b.broker.stop(signal.SIGKILL)
        time.sleep(1.5)
        b.broker.start()
        time.sleep(2.5)
    rc, s = lp.stop()
    return {**b.tally(s.get("predictions")), "outcome": outcome(rc, s)}


def row_loop_kill(b: Bench, tries: int) -> dict:
    for _ in range(tries):
        lp = b.loop()
        time.sleep(3)
        lp.kill()
    lp = b.loop()
    time.sleep(3)
    rc, s = lp.stop()
    return {**b.tally(), "outcome": f"restarted after each kill; last run {outcome(rc, s)}"}


def row_both_kill(b: Bench, tries: int) -> dict:
    for _ in range(tries):
        lp = b.loop()
        time.sleep(3)
        lp.kill()
        b.broker.stop(signal.SIGKILL)
        b.broker.start()
    lp = b.loop()
    time.sleep(3)
    rc, s = lp.stop()
    return {**b.tally(), "outcome": outcome(rc, s)}


def row_refusing_broker(b: Bench, tries: int) -> dict:
    """A broker that PUBACKs every publish with 0x87 (not authorized): nothing may leave the spool. Then the
    real broker comes back on the same spool and must receive every prediction the refused run made."""
    peer = subprocess.Popen([sys.executable, str(REPO / "tests" / "mqtt" / "mqtt5_peer.py"), "--port", "0",
                             "--puback-reason", "0x87"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        port = int(peer.stdout.readline().split()[1])  # "listening PORT"
        lp = b.loop(None, f"mqtt://127.0.0.1:{port}?protocol=5")
        time.sleep(3 * tries)
        rc1, s1 = lp.stop()
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    pub = s1.get("publisher", {})
    lp = b.loop()
    time.sleep(3)
    rc2, s2 = lp.stop()
    return {**b.tally(), "outcome": f"refused run: {pub.get('rejected', '?')} rejected, {pub.get('acked', '?')} acked, "
                                   f"{pub.get('spooled', '?')} kept; {outcome(rc1, s1)}; then all sent to mosquitto"}


def row_disk_full(b: Bench, tries: int) -> dict:
    """The spool's filesystem is full from the start (a 4 MiB tmpfs filled by a ballast file); space returns later."""
    mnt = b.dir / "small-fs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        return {"sent": "-", "outcome": "skipped: cannot mount a tmpfs here (needs root)"}
    try:
        ballast = mnt / "ballast"
        with ballast.open("wb") as f:  # fill to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
            try:
                f.flush()
            except OSError:
                pass
        b.spool = mnt / "spool"
        lp = b.loop()
        time.sleep(3 * tries)
        alive_full = lp.p.poll() is None
        ballast.unlink()  # space comes back
        time.sleep(3)
        rc, s = lp.stop()
        pub = s.get("publisher", {})
        return {**b.tally(s.get("predictions")),
                "outcome": f"{'running' if alive_full else 'DIED'} while full; {pub.get('unspooled', '?')} sent unspooled; "
                           f"{outcome(rc, s)}"}
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---------------------------------------------------------------- serial faults (a virtual MCU on a real pty)


class InjectingMcu:
    """The emulator's VirtualMcu in a thread; `inject(frames)` sends crafted frames from the MCU's own thread."""

    def __init__(self, link: Path, faults: list[str] | None = None, rate: float = 0.0):
        from edge_gmm.firmware_bridge.emulator import VirtualMcu, synthetic_feeds
        from edge_gmm.firmware_bridge.faults import FaultInjector
        from edge_gmm.firmware_bridge.transports import PtyTransport

        pending: list[bytes] = []
        self.pending = pending

        class Mcu(VirtualMcu):
            def _poll_commands(self) -> None:
                while pending:
                    self._write(pending.pop(0))
                super()._poll_commands()

        self.mcu = Mcu(synthetic_feeds(seed=1, duration_s=20.0), PtyTransport(link),
                       faults=FaultInjector(faults or [], rate=rate))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.mcu.run, kwargs={"stop_event": self.stop_event}, daemon=True)
        self.thread.start()

    def inject(self, *frames) -> None:
        from edge_gmm.firmware_bridge.protocol import encode_frame

        for f in frames:
            f.seq = self.mcu.seq
            self.pending.append(encode_frame(f))

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)
        self.mcu.transport.close()


AFTER_S = 5.0  # how long each serial fault is watched: the tiny bundle predicts every 0.5 s, so ~10 expected


def serial_row(b: Bench, tries: int, inject, faults: list[str] | None = None, rate: float = 0.0) -> dict:
    """imu+env from the MCU, audio from a live synth; `inject(mcu)` is called `tries` times, AFTER_S apart.
    Per fault: how many predictions came in the next AFTER_S seconds, and whether imu was `ok` again by then."""
    link = b.dir / "ttyMCU"
    mcu = InjectingMcu(link, faults, rate)
    sources = b.dir / "sources.yaml"
    sources.write_text(f"imu: {link}\nenv: {link}\naudio: synth://machine-health?label=normal\n")
    imu_ok = lambda ps: any(p["sensors"].get("imu") == "ok" for p in ps)  # noqa: E731
    try:
        lp = b.loop(str(sources))
        deadline = time.monotonic() + 30
        while not imu_ok(b.collector.payloads) and time.monotonic() < deadline:
            time.sleep(0.1)
        counts, ok_at_end, first = [], 0, len(b.collector.payloads)
        for _ in range(tries):
            n = len(b.collector.payloads)
            if inject is not None:
                inject(mcu)
            time.sleep(AFTER_S)
            after = b.collector.payloads[n:]
            counts.append(len(after))
            ok_at_end += imu_ok(after[-3:])
        alive = lp.p.poll() is None
        rc, s = lp.stop()
    finally:
        mcu.stop()
    future = sum(p["window"]["end"] > p["ts"] + 5 for p in b.collector.payloads)  # stamped ahead of publish time
    during = b.collector.payloads[first:]
    share = 100 * sum(p["sensors"].get("imu") == "ok" for p in during) / max(1, len(during))
    return {**b.tally(s.get("predictions")),
            "outcome": f"{'running' if alive else 'DIED'}; {min(counts)}-{max(counts)} predictions in the {AFTER_S:.0f} s "
                       f"after each fault, imu ok again {ok_at_end}/{tries} (ok in {share:.0f} % of them)"
                       f"{f', {future} stamped in the future' if future else ''}; {outcome(rc, s)}"}


def jump(mcu: InjectingMcu) -> None:
    """One CRC-valid samples frame stamped ~2**31 us (36 min) ahead of the MCU clock (just under half the u32
    range, so unwrapping reads it as ahead, not behind)."""
    import numpy as np

    from edge_gmm.firmware_bridge.protocol import SampleFormat, samples_frame

    feed = mcu.mcu.feeds[0]
    values = feed.raw(np.zeros((feed.per_frame, feed.x.shape[1]), dtype=np.float32))
    t = (mcu.mcu.now_us() + 2**31 - 10**6) & 0xFFFFFFFF
    mcu.inject(samples_frame(feed.sensor, values, fmt=SampleFormat.INT16, t_us=t))


def redescribe(mcu: InjectingMcu) -> None:
    """imu re-announced with 3 more channels and one frame of such samples; the MCU's next periodic descriptor
    (within 1 s) is the right one again."""
    from dataclasses import replace

    import numpy as np

    from edge_gmm.firmware_bridge.protocol import SampleFormat, descriptor_frame, samples_frame

    feed = mcu.mcu.feeds[0]
    d = replace(feed.descriptor(), channels=feed.x.shape[1] + 3)
    values = np.zeros((feed.per_frame, d.channels), dtype=np.int16)
    now = mcu.mcu.now_us()
    mcu.inject(descriptor_frame(d, t_us=now), samples_frame(feed.sensor, values, fmt=SampleFormat.INT16, t_us=now))


SERIAL = {
    "clock-jump": lambda b, n: serial_row(b, n, jump),
    "descriptor-change": lambda b, n: serial_row(b, n, redescribe),
    "garbage-serial": lambda b, n: serial_row(b, n, None, ["garbage", "bitflip", "drop"], rate=0.05),
}
TITLES = {"broker-kill": "broker SIGKILL", "loop-kill": "loop SIGKILL", "both-kill": "broker + loop SIGKILL",
          "disk-full": "disk full (spool fs)", "refusing-broker": "broker refuses (PUBACK 0x87)",
          "clock-jump": "clock jump 2^31 us", "descriptor-change": "descriptor change",
          "garbage-serial": "garbage serial (5 % of frames)"}
RUNNERS = {"broker-kill": row_broker_kill, "loop-kill": row_loop_kill, "both-kill": row_both_kill,
           "disk-full": row_disk_full, "refusing-broker": row_refusing_broker, **SERIAL}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=3, help="injections per fault (default 3)")
    ap.add_argument("--only", default="", help=f"comma-separated rows: {', '.join(ROWS)}")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument("--no-publish", action="store_true", help="do not write docs/benchmarks.md")
    a = ap.parse_args()
    only = [r for r in a.only.split(",") if r] or list(ROWS)
    unknown = set(only) - set(ROWS)
    if unknown:
        ap.error(f"unknown row(s) {sorted(unknown)}; choose from {', '.join(ROWS)}")
    from test_loop_kit import make_bundle, make_dataset

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        root = Path(tmp)
        bundle, dataset = make_bundle(root / "bundle"), make_dataset(root / "mh", sessions=2, seconds=8.0)
        for name in only:
            t0 = time.monotonic()
            b = Bench(root, name, bundle, dataset)
            try:
                r = RUNNERS[name](b, a.tries)
            except Exception as e:  # a row that breaks is reported, not hidden
                r = {"outcome": f"BENCH ERROR {type(e).__name__}: {e}"}
            finally:
                b.close()
            row = {"fault": TITLES[name], "tries": a.tries, **r, "s": round(time.monotonic() - t0, 1)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    cols = ["fault", "tries", "sent", "received", "lost", "duplicated", "outcome"]
    notes = ("sent = predictions the device numbered (seq); received/lost/duplicated from a persistent QoS 1 "
             "subscriber (duplicates after a loop SIGKILL are by design: acks are saved twice a second, so "
             "delivery is at-least-once); outcome = the loop's state during the fault and its exit on SIGTERM. "
             "A sensor counts `ok` only with 90 % of its samples in the window (min_coverage), so heavier "
             "frame loss shows as `stale`, not as a wrong prediction.")
    publish("faults", "Fault injection (device loop)", "python benchmarks/bench_faults.py", md_table(rows, cols),
            notes, write=not a.no_publish)
    if a.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
