"""Publisher against a real mosquitto: delivery, schema, broker restarts, our own restart, status and will."""

import json
import signal
import subprocess
import sys
import threading
import time

from conftest import free_port
from mqtt_kit import wait_until

from edge_gmm.mqtt.payload import example_prediction, validate
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.spool import Spool
from edge_gmm.mqtt.subscriber import Subscriber
from edge_gmm.mqtt.url import parse_mqtt_url

DEV = "dev1"



def test_mosquitto_sub_gets_every_prediction_status_and_metrics_all_valid(mosquitto, tmp_path):
    n = 200
    sub = subprocess.Popen(  # -d: a debug line tells when it is subscribed (stdbuf: line by line); -W 20: it gives up
        ["stdbuf", "-oL", "mosquitto_sub", "-d", "-p", str(mosquitto.port), "-q", "1", "-v", "-t", f"edge-gmm/v1/{DEV}/#",
         "-C", str(n + 2), "-W", "20"],
        stdout=subprocess.PIPE, text=True,
    )
    for line in sub.stdout:
        if "SUBACK" in line:
            break
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=tmp_path / "spool",
                    status_extra={"model": {"name": "m"}}).start()
    seqs = [pub.publish_prediction(example_prediction(DEV)) for _ in range(n)]
    assert seqs == list(range(n))
    assert wait_until(lambda: pub.stats()["acked"] == n)
    pub.publish_metrics({"latency_ms": {"infer": {"p50": 2.0, "p99": 3.5}}, "sensors": {"imu": "ok"}})
    out, _ = sub.communicate(timeout=25)
    pub.stop()
    by_kind = {"prediction": [], "status": [], "metrics": []}
    for line in out.splitlines():
        if not line.startswith("edge-gmm/"):
            continue  # a debug line
        topic, body = line.split(" ", 1)
        kind = topic.rsplit("/", 1)[1]
        payload = json.loads(body)
        validate(kind, payload)
        by_kind[kind].append(payload)
    assert [p["seq"] for p in by_kind["prediction"]] == list(range(n))
    assert by_kind["status"][0]["state"] == "online" and by_kind["status"][0]["model"] == {"name": "m"}
    assert by_kind["metrics"][0]["publisher"]["acked"] == n
    assert pub.stats()["spooled"] == 0


def test_broker_down_spools_across_a_publisher_restart_then_delivers_in_order(mosquitto, tmp_path):
    # a persistent subscriber session exists on the broker, then the broker goes away
    Subscriber(parse_mqtt_url(mosquitto.url), DEV, client_id="watcher").start().stop()
    mosquitto.stop()
    t0 = time.monotonic()
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=tmp_path / "spool").start()
    assert time.monotonic() - t0 < 2  # a missing broker does not hold up the device loop
    for _ in range(50):
        pub.publish_prediction(example_prediction(DEV))
    assert pub.stats()["spooled"] == 50 and not pub.stats()["connected"]
    t0 = time.monotonic()
    pub.stop(timeout=0.5)
    assert time.monotonic() - t0 < 3 and pub.stats()["spooled"] == 50  # bounded stop; nothing thrown away
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=tmp_path / "spool").start()  # device restarts
    assert [pub.publish_prediction(example_prediction(DEV)) for _ in range(10)] == list(range(50, 60))
    mosquitto.start()
    assert wait_until(lambda: pub.stats()["acked"] == 60)
    sub = Subscriber(parse_mqtt_url(mosquitto.url), DEV, client_id="watcher").start()
    got = sub.collect(60, timeout=10)
    sub.stop()
    pub.stop()
    assert [p["seq"] for p in got] == list(range(60))


def test_full_spool_drops_the_oldest_and_counts_them(tmp_path):
    nowhere = parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}")
    pub = Publisher(nowhere, DEV, spool_dir=tmp_path / "spool", spool_max_bytes=32 << 10).start()
    for _ in range(400):
        pub.publish_prediction(example_prediction(DEV))
    pub.stop(timeout=0.2)
    st = pub.stats()
    assert st["spool_dropped"] > 0 and st["spooled"] + st["spool_dropped"] == 400
    assert st["spool_bytes"] <= 32 << 10
    with Spool(tmp_path / "spool") as sp:  # the newest survive, in order, for the next start
        left = [s for s, _, _ in sp.pending_from(0, 1000)]
    assert left == list(range(400 - len(left), 400))


def test_broker_sigkill_mid_stream_leaves_no_seq_gap(mosquitto, tmp_path):
    n = 300
    sub = Subscriber(parse_mqtt_url(mosquitto.url), DEV, client_id="watcher").start()
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=tmp_path / "spool").start()

    def produce():
        for _ in range(n):
            pub.publish_prediction(example_prediction(DEV))
            time.sleep(0.003)

    producer = threading.Thread(target=produce)
    producer.start()
    assert wait_until(lambda: sub.stats()["received"] >= 100)
    mosquitto.stop(signal.SIGKILL)
    time.sleep(0.2)
    mosquitto.start()
    producer.join()
    assert wait_until(lambda: {p["seq"] for p in sub.predictions} >= set(range(n)), timeout=20), sub.stats()
    stats = sub.stats()
    sub.stop()
    pub.stop()
    assert stats["gaps"] == 0
    assert pub.stats()["reconnects"] >= 1


def status(sub) -> dict:
    view = sub.devices().get(DEV)
    return (view.status if view else None) or {}


CHILD = """
import sys, time
from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.url import parse_mqtt_url
pub = Publisher(parse_mqtt_url(sys.argv[1]), "dev1", spool_dir=sys.argv[2]).start()
for _ in range(int(sys.argv[3])):
    pub.publish_prediction(example_prediction("dev1"))
print("published", flush=True)
time.sleep(60)
"""


def test_publisher_killed_and_restarted_delivers_what_it_spooled(mosquitto, tmp_path):
    n = 400
    spool = tmp_path / "spool"
    sub = Subscriber(parse_mqtt_url(mosquitto.url), DEV, client_id="watcher").start()
    child = subprocess.Popen([sys.executable, "-c", CHILD, mosquitto.url, str(spool), str(n)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "published"
    child.send_signal(signal.SIGKILL)  # mid-delivery: most predictions are not PUBACKed yet
    child.wait()
    assert wait_until(lambda: status(sub).get("state") == "offline")
    assert status(sub)["reason"] == "connection lost"  # the last will
    with Spool(spool) as sp:
        assert sp.recovered > 0, "the kill came too late to test anything"
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=spool).start()
    assert pub.publish_prediction(example_prediction(DEV)) == n  # seq continues after the restart
    assert wait_until(lambda: {p["seq"] for p in sub.predictions} >= set(range(n + 1)), timeout=30), sub.stats()
    pub.stop()
    assert wait_until(lambda: status(sub).get("reason") == "stopped")
    sub.stop()
    assert sub.stats()["gaps"] == 0


def test_status_is_retained_and_updated_for_late_subscribers(mosquitto, tmp_path):
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=tmp_path / "spool",
                    status_extra={"model": {"name": "m", "version": "2"}}).start()
    pub.set_status({"sources": ["replay://ds"]})
    pub.publish_prediction(example_prediction(DEV))
    assert wait_until(lambda: pub.stats()["acked"] == 1)
    late = Subscriber(parse_mqtt_url(mosquitto.url), DEV).start()  # joins after the fact: gets the retained copy
    assert wait_until(lambda: status(late).get("sources") == ["replay://ds"])
    assert status(late)["state"] == "online" and status(late)["model"]["version"] == "2"
    validate("status", status(late))
    pub.stop()
    assert wait_until(lambda: status(late).get("state") == "offline")
    late.stop()
