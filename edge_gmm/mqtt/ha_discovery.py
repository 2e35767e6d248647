"""Home Assistant MQTT discovery: retained configs that make a device's predictions Home Assistant sensors.

Topics: `homeassistant/sensor/<node_id>/<object_id>/config` (node_id from the device id, reduced to
[A-Za-z0-9_-], with a short hash when that changed it). One sensor per task (state: the label, attributes:
label, score and scores) and one per modality (ok | stale | missing), all reading the prediction topic, all
available while our retained status topic says `online`. The publisher sends them on every connect and again
when Home Assistant announces `online` on `homeassistant/status`; `remove_configs` clears them (an empty
retained payload on each config topic). docs/home-assistant.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

from edge_gmm.mqtt.topics import check_device_id, prediction_topic, status_topic

PREFIX = "homeassistant"
HA_STATUS_TOPIC = PREFIX + "/status"  # Home Assistant's birth (online) and last will (offline)
MODES = ("off", "on", "remove")
MANUFACTURER = "edge-gmm"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def safe_id(name: str) -> str:
    """A topic level Home Assistant accepts as node_id / object_id: [A-Za-z0-9_-]; a hash keeps it distinct."""
    clean = _UNSAFE.sub("_", name)
    if clean != name or not clean:
        clean = f"{clean}_{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:6]}"
    return clean


def node_id(device_id: str) -> str:
    return safe_id(check_device_id(device_id))


def _path(*keys: str) -> str:
    """`value_json.a.b` (or `value_json['a b']` where a key is not an identifier) for a Jinja template."""
    out = "value_json"
    for k in keys:
        out += f".{k}" if _IDENT.match(k) else f"[{json.dumps(k)}]"
    return out


def discovery_configs(device_id: str, *, model: dict[str, Any], tasks: Iterable[str],
                      modalities: Iterable[str], prefix: str = PREFIX) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) for every entity of one device."""
    node = node_id(device_id)
    device = {
        "identifiers": [f"edge_gmm_{node}"],
        "name": device_id,
        "manufacturer": MANUFACTURER,
        "model": str(model.get("name", "")),
        "sw_version": str(model.get("version", "")),
    }
    common = {
        "state_topic": prediction_topic(device_id),
        "availability_topic": status_topic(device_id),
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "device": device,
    }
    out = []
    for task in tasks:
        obj = f"task_{safe_id(task)}"
        out.append((f"{prefix}/sensor/{node}/{obj}/config", {
            **common,
            "name": task,
            "unique_id": f"edge_gmm_{node}_{obj}",
            "icon": "mdi:label-outline",
            "value_template": "{{ " + _path("tasks", task, "label") + " }}",
            "json_attributes_topic": prediction_topic(device_id),
            "json_attributes_template": "{{ " + _path("tasks", task) + " | tojson }}",
        }))
    for modality in modalities:
        obj = f"sensor_{safe_id(modality)}"
        out.append((f"{prefix}/sensor/{node}/{obj}/config", {
            **common,
            "name": f"{modality} sensor",
            "unique_id": f"edge_gmm_{node}_{obj}",
            "icon": "mdi:access-point",
            "entity_category": "diagnostic",
            "device_class": "enum",
            "options": ["ok", "stale", "missing"],
            "value_template": "{{ " + _path("sensors", modality) + " }}",
        }))
    return out


def encoded_configs(configs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, bytes]]:
    return [(t, json.dumps(c, separators=(",", ":")).encode()) for t, c in configs]


def remove_configs(broker, device_id: str, topics: list[str], *, timeout: float = 10.0) -> int:
    """Publish an empty retained payload (QoS 1) on each config topic and wait for the PUBACKs; the count."""
    import threading
    import time

    from edge_gmm.errors import ConfigError, DeviceError
    from edge_gmm.mqtt import client as mq

    if broker.embedded:
        raise ConfigError("--ha-discovery remove needs a real broker URL, not 'embedded'")
    proto = "3.1.1" if broker.protocol == "3.1.1" else "5"
    c = mq.make_client(broker, f"{device_id}-ha-remove", protocol=proto, persistent=False)
    connected = threading.Event()
    result: list[Any] = []

    def on_connect(client, userdata, flags, reason, properties) -> None:
        result.append(reason)
        connected.set()

    c.on_connect = on_connect
    try:
        c.connect(broker.host, broker.port, **mq.connect_kwargs(proto, False, broker.keepalive))
    except OSError as e:
        fatal = mq.connect_error(broker, e)
        raise fatal if fatal is not None else DeviceError(f"broker {broker.url} not reachable: {e}") from None
    c.loop_start()
    try:
        deadline = time.monotonic() + timeout
        if not connected.wait(timeout):
            raise DeviceError(f"broker {broker.url}: no CONNACK within {timeout:g} s")
        if result[0].is_failure:
            raise mq.refusal_error(broker, result[0], device_id) or DeviceError(f"broker {broker.url} refused: {result[0]}")
        infos = [c.publish(t, b"", qos=1, retain=True) for t in topics]
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise DeviceError(f"broker {broker.url}: clearing Home Assistant configs timed out")
        return len(infos)
    finally:
        c.disconnect()
        c.loop_stop()
