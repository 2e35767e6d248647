"""Publishing rate of edge_gmm.mqtt.Publisher (spool + paho) to brokers on loopback.

    .venv/bin/python benchmarks/bench_mqtt.py            # ~10 s: 5000 predictions per row
    .venv/bin/python benchmarks/bench_mqtt.py --n 50000  # steadier numbers

Each row: a fresh mosquitto (or the embedded amqtt broker) on a free port, a mosquitto_sub subscriber
attached (QoS 1), one Publisher. `enqueue/s` is what the device loop sees (publish_prediction calls per
second: JSON + spool append); `acked/s` is end to end: every prediction PUBACKed by the broker and so
removed from the spool. Target (issue 6): >= 5k predictions/s at QoS 1 to mosquitto.
The "durable" broker saves its database on every change (FIELD-NOTES: needed so that a broker SIGKILL
loses nothing it acknowledged); it costs throughput, so it runs fewer predictions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import md_table, publish  # noqa: E402
from edge_gmm.mqtt.broker import EmbeddedBroker  # noqa: E402
from edge_gmm.mqtt.payload import encode, example_prediction  # noqa: E402
from edge_gmm.mqtt.publisher import Publisher  # noqa: E402
from edge_gmm.mqtt.url import parse_mqtt_url  # noqa: E402

FAST = ["max_queued_messages 0", "persistence false"]
DURABLE = ["max_queued_messages 0", "persistence true", "autosave_interval 1", "autosave_on_changes true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path, lines: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / f"mosquitto-{port}.conf"
    body = [f"listener {port} 127.0.0.1", "allow_anonymous true", f"persistence_location {workdir}/", *lines]
    if os.geteuid() == 0:
        body.append("user root")
    conf.write_text("\n".join(body) + "\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def measure(url: str, n: int, workdir: Path, port: int) -> dict:
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "edge-gmm/#", "-V",
                            "311" if "3.1.1" in url else "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    cfg = parse_mqtt_url(url)
    pub = Publisher(cfg, "bench", spool_dir=workdir / f"spool-{port}-{cfg.protocol}-{cfg.qos}").start()
    payload = example_prediction("bench")
    t0 = time.perf_counter()
    for _ in range(n):
        pub.publish_prediction(payload)
    t1 = time.perf_counter()
    deadline = time.monotonic() + 120
    while pub.stats()["acked"] < n and time.monotonic() < deadline:
        time.sleep(0.002)
    t2 = time.perf_counter()
    acked = pub.stats()["acked"]
    pub.stop()
    sub.terminate()
    sub.wait()
    return {
        "protocol": pub.stats()["protocol"],
        "qos": cfg.qos,
        "predictions": n,
        "payload B": len(encode({**payload, "seq": n, "ts": time.time()})),
        "enqueue/s": round(n / (t1 - t0)),
        "acked/s": round(acked / (t2 - t0)),
        "acked": acked,
    }


def measure_raw_paho(port: int, n: int) -> dict:
    """Baseline: a bare paho client publishing the same bytes (no spool, no seq), same in-flight window."""
    import paho.mqtt.client as mqtt

    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "edge-gmm/#"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    acked = [0]
    c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    data = encode({**example_prediction("bench"), "seq": 0, "ts": time.time()})
    t0 = time.perf_counter()
    for i in range(n):
        while i - acked[0] >= 1000:  # the same window the Publisher keeps
            time.sleep(0.0002)
        c.publish("edge-gmm/v1/raw/prediction", data, qos=1)
    deadline = time.monotonic() + 120
    while acked[0] < n and time.monotonic() < deadline:
        time.sleep(0.002)
    rate = round(acked[0] / (time.perf_counter() - t0))
    c.disconnect()
    c.loop_stop()
    sub.terminate()
    sub.wait()
    return {"protocol": "5", "qos": 1, "predictions": n, "payload B": len(data), "enqueue/s": "-", "acked/s": rate,
            "acked": acked[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="predictions per row (default %(default)s)")
    ap.add_argument("--no-publish", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = ap.parse_args()
    rows = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, lines, query, n in (
            ("mosquitto, bare paho (baseline)", FAST, "raw", args.n),
            ("mosquitto", FAST, "", args.n),
            ("mosquitto", FAST, "?protocol=3.1.1", args.n),
            ("mosquitto", FAST, "?qos=0", args.n),
            ("mosquitto durable", DURABLE, "", max(200, args.n // 20)),
        ):
            proc, port = start_mosquitto(work, lines)
            try:
                if query == "raw":
                    rows.append({"broker": name, **measure_raw_paho(port, n)})
                else:
                    rows.append({"broker": name, **measure(f"mqtt://127.0.0.1:{port}{query}", n, work, port)})
            finally:
                proc.terminate()
                proc.wait()
        with EmbeddedBroker() as broker:
            rows.append({"broker": "embedded (amqtt)", **measure(broker.url, max(200, args.n // 5), work, broker.port)})
    table = md_table(rows)
    command = f"python benchmarks/bench_mqtt.py --n {args.n}"
    notes = ("One Publisher thread pair (caller + pump) on a shared 2-core machine; a mosquitto_sub subscriber "
             f"attached to every broker; load average {load:.1f} when it started. The bare-paho row is the same "
             "bytes without spool or sequence numbers: the publisher's cost is the difference. "
             "Target: >= 5k predictions/s at QoS 1 to mosquitto.")
    publish("mqtt", "MQTT publishing rate (loopback)", command, table, notes, write=not args.no_publish)


if __name__ == "__main__":
    main()
