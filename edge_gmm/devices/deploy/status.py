"""Watch a device's retained status topic until it reports the model just deployed (or give a reason why not).

Subscribe BEFORE restarting the loop: the broker then forwards every new status live (retain flag 0), while the
retained copy it sends on subscribing has retain=1 and may be the previous loop's. Only live messages count,
so an old 'online' of the same model cannot pass for the new process.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Callable

from edge_gmm.errors import DeviceError


class StatusWatcher:
    def __init__(self, mqtt_url: str, device_id: str, *, connect_timeout: float = 10.0):
        from edge_gmm.mqtt.url import parse_mqtt_url

        self.broker = parse_mqtt_url(mqtt_url)
        self.device_id = device_id
        self.connect_timeout = connect_timeout
        self._cond = threading.Condition()
        self._live: list[dict] = []  # statuses published after we subscribed, in arrival order
        self.retained: dict | None = None
        self._client = None

    def start(self) -> "StatusWatcher":
        from edge_gmm.mqtt import client as mq
        from edge_gmm.mqtt.topics import status_topic

        protocol = "3.1.1" if self.broker.protocol == "3.1.1" else "5"
        c = mq.make_client(self.broker, f"edge-gmm-deploy-{uuid.uuid4().hex[:8]}", protocol=protocol, persistent=False)
        subscribed = threading.Event()
        refused: list = []

        def on_connect(client, userdata, flags, reason, properties):
            if getattr(reason, "is_failure", False):
                refused.append(reason)
                subscribed.set()
                return
            client.subscribe(status_topic(self.device_id), qos=1)

        def on_subscribe(client, userdata, mid, reasons, properties):
            subscribed.set()

        def on_message(client, userdata, msg):
            try:
                payload = json.loads(msg.payload.decode())
            except (UnicodeDecodeError, ValueError):
                return
            if not isinstance(payload, dict):
                return
            with self._cond:
                if msg.retain:
                    self.retained = payload
                else:
                    self._live.append(payload)
                self._cond.notify_all()

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        try:
            c.connect(self.broker.host, self.broker.port, **mq.connect_kwargs(protocol, False, 30))
        except OSError as e:
            raise DeviceError(
                f"cannot reach the broker {self.broker.url} from this machine to watch the device's status: {e}",
                hint="deploy waits for the device's status on the broker given with --mqtt; pass --status-mqtt URL "
                "if this machine reaches it under another address, or --no-wait",
            ) from None
        c.loop_start()
        self._client = c
        if not subscribed.wait(self.connect_timeout) or refused:
            self.stop()
            if refused:
                raise mq.refusal_error(self.broker, refused[0])
            raise DeviceError(f"broker {self.broker.url}: no answer to CONNECT/SUBSCRIBE within {self.connect_timeout:.0f} s")
        return self

    def mark(self) -> int:
        """A position in the message stream: `wait_for(since=mark)` ignores what came before it."""
        with self._cond:
            return len(self._live)

    def wait_for(
        self,
        name: str,
        version: str,
        *,
        timeout: float,
        since: int = 0,
        abort: Callable[[], str | None] | None = None,
        abort_every: float = 1.0,
    ) -> tuple[dict | None, str]:
        """(status, "") once a live status says online with this model; else (last status or None, why not).

        `abort()` is polled every `abort_every` seconds (e.g. "is the service dead?") and ends the wait early
        with its reason.
        """
        deadline = time.monotonic() + timeout
        next_abort = time.monotonic() + abort_every
        last: dict | None = None
        seen = since
        while True:
            with self._cond:
                for status in self._live[seen:]:
                    last = status
                    model = status.get("model") or {}
                    if status.get("state") == "online" and model.get("name") == name and str(model.get("version")) == version:
                        return status, ""
                seen = len(self._live)
                now = time.monotonic()
                if now >= deadline:
                    break
                self._cond.wait(min(deadline, next_abort) - now)
            if abort is not None and time.monotonic() >= next_abort:
                next_abort = time.monotonic() + abort_every
                why = abort()
                if why:
                    return last, why
        if last is None:
            return None, f"no status from device {self.device_id!r} within {timeout:.0f} s"
        model = last.get("model") or {}
        return last, (
            f"status after {timeout:.0f} s is {last.get('state')!r} with model "
            f"{model.get('name')} {model.get('version')}, not {name} {version}"
        )

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
