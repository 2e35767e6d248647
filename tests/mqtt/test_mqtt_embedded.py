"""The embedded broker (amqtt, MQTT 3.1.1): publisher and subscriber work through it with no system broker."""

import time

import pytest

from edge_gmm.errors import DeviceError
from edge_gmm.mqtt.broker import EmbeddedBroker
from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.subscriber import Subscriber
from edge_gmm.mqtt.url import parse_mqtt_url


def test_auto_protocol_falls_back_to_311_against_embedded_broker(tmp_path):
    with EmbeddedBroker() as broker:
        cfg = parse_mqtt_url(f"mqtt://127.0.0.1:{broker.port}")  # protocol auto: MQTT 5 first
        sub = Subscriber(cfg, "+").start()
        t0 = time.monotonic()
        pub = Publisher(cfg, "dev1", spool_dir=tmp_path / "spool").start()
        assert time.monotonic() - t0 < 4 and pub.stats()["protocol"] == "3.1.1"
        for _ in range(30):
            pub.publish_prediction(example_prediction("dev1"))
        got = sub.collect(30, timeout=10)
        pub.stop()
        sub.stop()
    assert [p["seq"] for p in got] == list(range(30))


def test_mqtt_embedded_url_starts_a_broker_the_subscriber_can_join(tmp_path, cli):
    pub = Publisher(parse_mqtt_url("embedded:0"), "dev1", spool_dir=tmp_path / "spool").start()
    port = pub.broker.port
    assert port != 0 and pub.stats()["protocol"] == "3.1.1"
    sub = Subscriber(parse_mqtt_url(f"embedded:{port}"), "dev1").start()  # 'embedded' joins from another process
    for _ in range(10):
        pub.publish_prediction(example_prediction("dev1"))
    got = sub.collect(10, timeout=10)
    sub.stop()
    with pytest.raises(DeviceError, match="in use"):  # a second embedded broker on the same port
        EmbeddedBroker(port).start()
    pub.stop()
    assert [p["seq"] for p in got] == list(range(10))
