"""Home Assistant MQTT discovery against a real mosquitto: retained configs with documented keys only, whose
state/availability topics carry our messages and whose templates point into real payloads; re-published on
Home Assistant's birth message; cleared by remove. Torch-free (runs in the Python 3.8 device subset too)."""

from __future__ import annotations

import json
import re
import threading
import time
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from mqtt_kit import wait_until

from edge_gmm.errors import ConfigError
from edge_gmm.mqtt.ha_discovery import (HA_STATUS_TOPIC, discovery_configs, encoded_configs, node_id,
                                        remove_configs)
from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.url import parse_mqtt_url

DEV = "jetson.01"  # a '.' Home Assistant does not take in a node_id: sanitized
PRED = example_prediction(DEV)
MODEL = PRED["model"]
TASKS = list(PRED["tasks"])
MODALITIES = list(PRED["sensors"])

# Keys Home Assistant documents for an MQTT sensor (integrations/sensor.mqtt, "Configuration Variables"),
# full names only, and for its `device` map.
SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device", "device_class",
    "enabled_by_default", "encoding", "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "last_reset_value_template", "name", "object_id",
    "default_entity_id", "options", "payload_available", "payload_not_available", "platform", "qos",
    "state_class", "state_topic", "suggested_display_precision", "unique_id", "unit_of_measurement",
    "value_template",
}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
               "name", "serial_number", "suggested_area", "sw_version", "via_device"}
TEMPLATE = re.compile(r"^\{\{\s*value_json((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*(\|\s*tojson\s*)?\}\}$")


class Watch:
    """A paho subscriber that records (topic, payload, retain) of every message."""

    def __init__(self, port: int, *topics: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{time.monotonic_ns()}")
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, bool(m.retain)))
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self._subscribed.wait(10)

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        return [(p, r) for t, p, r in self.messages if t == topic]

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{time.monotonic_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def evaluate(template: str, payload: dict):
    """`{{ value_json.a.b }}` (optionally `| tojson`) evaluated by path; KeyError where the path is not there."""
    m = TEMPLATE.match(template)
    assert m, f"not a simple path template: {template!r}"
    value = payload
    for key in m.group(1).split(".")[1:]:
        value = value[key]
    return json.dumps(value) if m.group(2) else value


def configs():
    return discovery_configs(DEV, model=MODEL, tasks=TASKS, modalities=MODALITIES)


def config_topics() -> list[str]:
    return [t for t, _ in configs()]


@pytest.fixture
def pub(mosquitto, tmp_path):
    p = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=tmp_path / "spool", status_extra={"model": MODEL},
                  ha_discovery=encoded_configs(configs())).start()
    yield p
    p.stop()


def test_configs_arrive_retained_with_documented_keys_and_their_topics_carry_our_messages(mosquitto, pub):
    node = node_id(DEV)
    assert re.match(r"^[A-Za-z0-9_-]+$", node) and node != node_id("jetson_01")
    topics = config_topics()
    assert len(topics) == len(TASKS) + len(MODALITIES)
    pub.publish_prediction(PRED)
    assert wait_until(lambda: pub.stats()["acked"] == 1)
    watch = Watch(mosquitto.port, "homeassistant/#", f"edge-gmm/v1/{DEV}/#")  # subscribes after: retained only
    try:
        assert wait_until(lambda: all(watch.on(t) for t in topics) and watch.on(f"edge-gmm/v1/{DEV}/status"))
        pub.publish_prediction(PRED)
        assert wait_until(lambda: watch.on(f"edge-gmm/v1/{DEV}/prediction"))
    finally:
        watch.stop()
    status = json.loads(watch.on(f"edge-gmm/v1/{DEV}/status")[-1][0])
    prediction = json.loads(watch.on(f"edge-gmm/v1/{DEV}/prediction")[-1][0])
    unique_ids = set()
    for topic in topics:
        assert topic.startswith(f"homeassistant/sensor/{node}/") and topic.endswith("/config")
        raw, retained = watch.on(topic)[0]
        assert retained
        cfg = json.loads(raw)
        assert set(cfg) <= SENSOR_KEYS, set(cfg) - SENSOR_KEYS
        assert set(cfg["device"]) <= DEVICE_KEYS, set(cfg["device"]) - DEVICE_KEYS
        assert cfg["device"]["model"] == MODEL["name"] and cfg["device"]["sw_version"] == MODEL["version"]
        assert cfg["device"]["manufacturer"] == "edge-gmm" and cfg["device"]["identifiers"]
        unique_ids.add(cfg["unique_id"])
        # availability: our retained status topic, its `state` compared with online/offline
        assert cfg["availability_topic"] == f"edge-gmm/v1/{DEV}/status"
        assert evaluate(cfg["availability_template"], status) == cfg["payload_available"] == "online"
        assert cfg["payload_not_available"] == "offline"
        assert cfg["state_topic"] == f"edge-gmm/v1/{DEV}/prediction"
        state = evaluate(cfg["value_template"], prediction)
        if "json_attributes_topic" in cfg:  # a task: the label, with label/score/scores as attributes
            task = topic.split("/")[-2][len("task_"):]
            assert state == prediction["tasks"][task]["label"] == "walking"
            assert cfg["json_attributes_topic"] == cfg["state_topic"]
            attrs = json.loads(evaluate(cfg["json_attributes_template"], prediction))
            assert attrs["score"] == pytest.approx(0.93) and set(attrs["scores"]) == {"walking", "running", "idle"}
        else:  # a modality: ok | stale | missing
            assert state in cfg["options"] and state == prediction["sensors"][topic.split("/")[-2][len("sensor_"):]]
    assert len(unique_ids) == len(topics)


def test_configs_go_out_again_when_home_assistant_announces_online(mosquitto, pub):
    topics = config_topics()
    watch = Watch(mosquitto.port, "homeassistant/sensor/#")
    try:
        assert wait_until(lambda: all(len(watch.on(t)) == 1 for t in topics))
        time.sleep(0.3)
        assert all(len(watch.on(t)) == 1 for t in topics)  # once per connect, not in a loop
        publish(mosquitto.port, HA_STATUS_TOPIC, b"offline")
        time.sleep(0.3)
        assert all(len(watch.on(t)) == 1 for t in topics)  # HA going away changes nothing
        publish(mosquitto.port, HA_STATUS_TOPIC, b"online")
        assert wait_until(lambda: all(len(watch.on(t)) == 2 for t in topics))
        assert json.loads(watch.on(topics[0])[1][0])["unique_id"] == json.loads(watch.on(topics[0])[0][0])["unique_id"]
    finally:
        watch.stop()


def test_remove_clears_the_retained_configs(mosquitto, pub):
    topics = config_topics()
    watch = Watch(mosquitto.port, "homeassistant/sensor/#")
    assert wait_until(lambda: all(watch.on(t) for t in topics))
    watch.stop()
    pub.stop()
    assert remove_configs(parse_mqtt_url(mosquitto.url), DEV, topics) == len(topics)
    after = Watch(mosquitto.port, "homeassistant/sensor/#", f"edge-gmm/v1/{DEV}/status")
    try:
        assert wait_until(lambda: after.on(f"edge-gmm/v1/{DEV}/status"))  # retained messages have arrived
        time.sleep(0.3)
        assert not any(after.on(t) for t in topics)  # nothing retained is left under homeassistant/
    finally:
        after.stop()


def test_the_run_flag_reaches_the_settings_and_needs_a_broker():
    import argparse

    from edge_gmm.cli.run import configure
    from edge_gmm.devices.job import RunSettings, _ha_discovery

    p = argparse.ArgumentParser()
    configure(p)
    base = ["--bundle", "b", "--sources", "s", "--mqtt", "none"]
    assert p.parse_args(base).ha_discovery == "off"
    assert p.parse_args(base + ["--ha-discovery", "remove"]).ha_discovery == "remove"
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--ha-discovery", "yes"])
    bundle = SimpleNamespace(name="fusion-student", manifest={"model": {"version": "1"}, "tasks": [{"name": "activity"}]})
    settings = RunSettings(bundle="b", sources="s", mqtt="none", device_id=DEV, ha_discovery="on")
    with pytest.raises(ConfigError):
        _ha_discovery(settings, bundle, MODALITIES, None)
    settings.ha_discovery = "off"
    assert _ha_discovery(settings, bundle, MODALITIES, None) == []
    settings.ha_discovery = "on"
    got = _ha_discovery(settings, bundle, MODALITIES, parse_mqtt_url("mqtt://127.0.0.1:1883"))
    assert [t for t, _ in got] == config_topics()
