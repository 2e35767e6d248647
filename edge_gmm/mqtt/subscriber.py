"""Subscriber: receive predictions (and status) of one device or all ('+'), check their sequence numbers.

`SeqTracker` keeps, per device, the set of sequence numbers still missing (counting from the first one
this subscriber saw, since it may join mid-stream): a number above the next
expected one opens a gap; a missing number that arrives late closes it (not a duplicate); a number at or
below the highest seen that is not missing is a duplicate (QoS 1 is at-least-once). Seq 0 after higher
numbers means the device started a new sequence (its spool was wiped) and is counted as a reset.

A payload that cannot be used (too big, nested too deep, not a JSON object, no integer `seq`) is counted
in `bad_payloads` and skipped; one that breaks the schema (with `validate`) in `invalid`. Neither stops
reception: nothing raised in paho's thread may end it.

`Subscriber(...).start()`, `wait(n, timeout)`, `collect(n, timeout)`, `stats()`, `devices()`, `stop()`.
Callbacks, all in paho's thread: `on_prediction(payload, outcome)`; `on_message(device_id, kind, payload,
outcome)` for predictions and status messages alike (device_id from the topic; outcome None for a status);
`on_connection(connected)` on every (re)subscription and every disconnect (paho reconnects by itself).
With a `client_id` the session is persistent (clean_start False + expiry): predictions published while
this subscriber is away (or while the broker restarts) are kept for it by the broker.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_gmm.errors import DataError, DeviceError
from edge_gmm.mqtt import client as mq
from edge_gmm.mqtt.payload import decode, validate
from edge_gmm.mqtt.topics import parse_topic, topic
from edge_gmm.mqtt.url import BrokerConfig

log = logging.getLogger(__name__)

MAX_MISSING = 100_000  # per device; beyond it a gap is only counted, not remembered
MAX_SEQ = 2**63 - 1
LOG_BAD = 5  # bad payloads logged one by one; after that only counted


@dataclass
class SeqTracker:
    last: int = -1  # highest seq seen
    received: int = 0
    duplicates: int = 0
    late: int = 0  # missing ones that arrived after later ones
    resets: int = 0
    missing: set[int] = field(default_factory=set)
    lost_untracked: int = 0  # gap beyond MAX_MISSING

    @property
    def gaps(self) -> int:
        """Sequence numbers skipped and not (yet) received."""
        return len(self.missing) + self.lost_untracked

    def add(self, seq: int) -> str:
        """Record one seq; returns 'ok', 'gap', 'late', 'duplicate' or 'reset'."""
        self.received += 1
        if self.last < 0 or seq == self.last + 1:  # the first one seen sets the start: we may join mid-stream
            self.last = seq
            return "ok"
        if seq > self.last:
            room = MAX_MISSING - len(self.missing)
            span = range(self.last + 1, seq)
            self.missing.update(span[:room] if room < len(span) else span)
            self.lost_untracked += max(0, len(span) - room)
            self.last = seq
            return "gap"
        if seq in self.missing:
            self.missing.discard(seq)
            self.late += 1
            return "late"
        if seq == 0:
            self.last, self.missing, self.lost_untracked = 0, set(), 0
            self.resets += 1
            return "reset"
        self.duplicates += 1
        return "duplicate"


@dataclass
class DeviceView:
    """What the live table shows for one device."""

    device_id: str
    seq: SeqTracker = field(default_factory=SeqTracker)
    last: dict[str, Any] | None = None  # the latest prediction payload
    status: dict[str, Any] | None = None  # the latest (retained) status payload
    received_at: float = 0.0  # time.time() of the latest prediction


class Subscriber:
    def __init__(
        self,
        broker: BrokerConfig,
        device: str = "+",
        *,
        client_id: str | None = None,
        validate: bool = False,
        keep: int = 100_000,
        on_prediction: Callable[[dict[str, Any], str], None] | None = None,
        on_message: Callable[[str, str, dict[str, Any], str | None], None] | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ):
        self.broker = broker
        self.device = device
        self.persistent = client_id is not None
        self.client_id = client_id or f"edge-gmm-sub-{uuid.uuid4().hex[:10]}"
        self.validate = validate
        self.on_prediction = on_prediction  # called in paho's thread with (payload, 'ok'|'gap'|...)
        self.on_message = on_message  # every prediction and status (retained ones included), keyed by topic
        self.on_connection = on_connection  # True once subscribed, False when the connection drops
        self.predictions: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.invalid = 0  # broke the schema (validate=True)
        self.bad_payloads = 0  # could not be used at all
        self._devices: dict[str, DeviceView] = {}
        self._cond = threading.Condition()
        self._received = 0
        self._client = None
        self._connected = threading.Event()  # connected and subscribed (SUBACK received)
        self._attempted = threading.Event()
        self._refusal: Any = None

    def start(self, wait_s: float = 5.0) -> "Subscriber":
        """Connect and subscribe; DeviceError when the broker refuses us or cannot be reached in `wait_s`."""
        auto = self.broker.protocol == "auto"
        # an MQTT 3.1.1-only broker refuses MQTT 5, closes, or (amqtt) stays silent: then try 3.1.1
        self._connect("3.1.1" if self.broker.protocol == "3.1.1" else "5", min(wait_s, 1.5) if auto else wait_s)
        if auto and not self._connected.is_set() and (self._refusal is None or str(self._refusal) in mq.PROTOCOL_REFUSED):
            self._drop()
            self._connect("3.1.1", wait_s)
        if self._refusal is None and not self._connected.is_set() and not self.broker.tls and mq.speaks_tls(self.broker.host, self.broker.port):
            self._drop()
            raise mq.tls_port_error(self.broker)
        if self._refusal is not None:
            self._drop()
            raise mq.refusal_error(self.broker, self._refusal, self.client_id) or DeviceError(
                f"broker {self.broker.url} cannot take a client now: {self._refusal}", hint="try again later")
        if not self._connected.is_set():
            self._drop()
            raise DeviceError(
                f"cannot reach the broker at {self.broker.url} within {wait_s:g} s",
                hint="is the broker running and the host/port right? (edge-gmm run --mqtt embedded starts one)",
            )
        return self

    def _connect(self, protocol: str, wait_s: float) -> None:
        self._attempted.clear()
        self._refusal = None
        c = mq.make_client(self.broker, self.client_id, protocol=protocol, persistent=self.persistent)
        c.on_connect = self._on_connect
        c.on_connect_fail = lambda *a: self._attempted.set()
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c
        try:
            c.connect(self.broker.host, self.broker.port, **mq.connect_kwargs(protocol, self.persistent, self.broker.keepalive))
        except OSError as e:
            self._client = None
            raise mq.connect_error(self.broker, e) or DeviceError(
                f"cannot reach the broker at {self.broker.url}: {e.strerror or e}",
                hint="is the broker running and the host/port right? (edge-gmm run --mqtt embedded starts one)",
            ) from None
        c.loop_start()
        self._attempted.wait(wait_s)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._refusal = reason
        else:
            qos = min(self.broker.qos, 1) or 1  # predictions are QoS 1; ask for no less
            client.subscribe([(topic(self.device, "prediction"), qos), (topic(self.device, "status"), 1)])
            return  # _attempted is set on SUBACK: start() returns once nothing can be missed any more
        self._attempted.set()

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        if any(r.is_failure for r in reasons):
            self._refusal = f"subscription refused: {', '.join(str(r) for r in reasons)}"
        else:
            self._connected.set()
            self._notify(self.on_connection, True)
        self._attempted.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected.clear()
        self._attempted.set()  # closed before a CONNACK: an MQTT 3.1.1-only broker does that to MQTT 5
        self._notify(self.on_connection, False)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self._take(msg)
        except Exception as e:  # paho's thread ends on an exception: count it, keep receiving
            self._bad(msg.topic, f"{type(e).__name__}: {e}")

    def _bad(self, topic_name: str, why: str) -> None:
        self.bad_payloads += 1
        if self.bad_payloads <= LOG_BAD:
            more = "; further bad payloads are only counted" if self.bad_payloads == LOG_BAD else ""
            log.warning("%s: bad payload skipped: %s%s", topic_name, why, more)

    def _take(self, msg) -> None:
        where = parse_topic(msg.topic)
        if where is None:
            return
        device_id, kind = where
        try:
            payload = decode(msg.payload)
            seq = payload.get("seq")
            if kind == "prediction" and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
                raise DataError(f"seq must be an integer >= 0, got {str(seq)[:40]!r}")
        except DataError as e:
            self._bad(msg.topic, str(e))
            return
        if self.validate:
            try:
                validate(kind, payload)
            except DataError as e:
                self.invalid += 1
                log.warning("%s: invalid payload: %s", msg.topic, e)
                return
        outcome = None
        with self._cond:
            view = self._devices.setdefault(device_id, DeviceView(device_id))
            if kind == "status":
                view.status = payload
            else:
                outcome = view.seq.add(seq)
                view.last = payload
                view.received_at = time.time()
                self.predictions.append(payload)
                self._received += 1
                self._cond.notify_all()
        # outside the lock: a callback may take its own locks
        if outcome is not None:
            self._notify(self.on_prediction, payload, outcome)
        self._notify(self.on_message, device_id, kind, payload, outcome)

    @staticmethod
    def _notify(callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is not None:
            try:
                callback(*args)
            except Exception:  # a bug in the caller's callback must not stop reception
                log.exception("subscriber callback %s", getattr(callback, "__qualname__", callback))

    # ------------------------------------------------------------ for callers

    def wait(self, n: int, timeout: float) -> bool:
        """True once `n` predictions arrived since start (False after `timeout` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._received < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def collect(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Wait for `n` predictions (at most `timeout` s) and return the ones received, oldest first."""
        self.wait(n, timeout)
        with self._cond:
            return list(self.predictions)[:n]

    def devices(self) -> dict[str, DeviceView]:
        with self._cond:
            return dict(self._devices)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            views = list(self._devices.values())
            return {
                "received": self._received,
                "gaps": sum(v.seq.gaps for v in views),
                "duplicates": sum(v.seq.duplicates for v in views),
                "late": sum(v.seq.late for v in views),
                "resets": sum(v.seq.resets for v in views),
                "invalid": self.invalid,
                "bad_payloads": self.bad_payloads,
                "devices": len([v for v in views if v.last is not None]),
                "connected": self._connected.is_set(),
            }

    def stop(self) -> None:
        self._drop()

    def _drop(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                c.disconnect()
            except Exception:  # already gone
                pass
            c.loop_stop()
        self._connected.clear()

    def __enter__(self) -> "Subscriber":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
