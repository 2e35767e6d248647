"""Publisher: predictions → on-disk spool → paho (QoS 1) → broker; leaves the spool on PUBACK only.

Threads: the caller (publish_* / set_status: a spool append and a notify, microseconds), paho's network
thread (callbacks only record events and notify), and one *pump* thread that does everything else —
hands spooled records to paho while connected, at most `window` unacknowledged at a time (so paho's own
queue, which lives in memory, stays bounded), turns PUBACKs into spool acks, publishes status and
metrics, saves the ack watermark, and rebuilds the client when a broker only speaks MQTT 3.1.1.
Only the pump calls `client.publish`, so it alone maps message ids to sequence numbers: no races.

A PUBACK with a failure reason code (MQTT 5, >= 0x80: e.g. 0x87 not authorized) is not a delivery: the
record stays in the spool, is counted in `rejected`, the reason is logged once, and it is sent again on
reconnect or after a back-off (RETRY_MIN_S doubling to RETRY_MAX_S), never in a hot loop.

Every wait is bounded: `start(wait_s)` waits for the first connection attempt only, `stop(timeout)`
waits for the spool to drain at most `timeout`. A broker that is down or busy at start is not an error
(predictions spool until it is back); what a retry cannot cure is a ConfigError from start(): a refused
password, client id or authorization, an unverifiable TLS certificate, TLS against a plain port or
plain MQTT against a TLS port.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_gmm.errors import DeviceError
from edge_gmm.mqtt import client as mq
from edge_gmm.mqtt.broker import EmbeddedBroker
from edge_gmm.mqtt.ha_discovery import HA_STATUS_TOPIC
from edge_gmm.mqtt.payload import encode, metrics_payload, status_payload
from edge_gmm.mqtt.spool import DEFAULT_RESERVE_BYTES, Spool
from edge_gmm.mqtt.topics import check_device_id, metrics_topic, prediction_topic, status_topic
from edge_gmm.mqtt.url import BrokerConfig

log = logging.getLogger(__name__)

STATE_SAVE_EVERY_S = 0.5
CONNACK_WAIT_S = 1.5  # no CONNACK to MQTT 5 this long after the TCP connect: try 3.1.1 (auto only)
_NOT_PREDICTION = -1  # mid map value for status/metrics publishes
RETRY_MIN_S = 1.0  # first re-send of predictions the broker refused (PUBACK >= 0x80) ...
RETRY_MAX_S = 30.0  # ... doubling to this while it goes on refusing


class Publisher:
    def __init__(
        self,
        broker: BrokerConfig,
        device_id: str,
        *,
        spool_dir: str | Path,
        spool_max_bytes: int = 64 << 20,
        spool_reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        qos: int | None = None,
        status_extra: dict[str, Any] | None = None,
        window: int = 1000,
        ha_discovery: list[tuple[str, bytes]] | None = None,
    ):
        self.broker = broker
        self.device_id = check_device_id(device_id)
        self.qos = broker.qos if qos is None else qos
        self.spool_dir = Path(spool_dir)
        self.spool_max_bytes = spool_max_bytes
        self.spool_reserve_bytes = spool_reserve_bytes  # free disk space the spool leaves alone
        self.window = window  # predictions handed to paho and not yet PUBACKed
        self._status_extra = dict(status_extra or {})
        # Home Assistant discovery: (config topic, payload), retained; sent on connect and on HA's birth message
        self._ha_configs = list(ha_discovery or [])
        self._topic = prediction_topic(device_id)
        self._spool: Spool | None = None
        self._embedded: EmbeddedBroker | None = None
        self._client = None
        self._protocol = "3.1.1" if broker.protocol == "3.1.1" else "5"
        self._cond = threading.Condition()
        self._idle = False  # the pump waits on _cond: only then do producers pay for a notify
        self._publish_lock = threading.Lock()  # seq assignment + spool append, atomic across callers
        self._acks: collections.deque[tuple[int, Any]] = collections.deque()  # (mid, reason) from on_publish
        self._retry: collections.deque[int] = collections.deque()  # seqs whose PUBACK refused them; pump only
        self._retry_at = float("inf")  # monotonic time of the next re-send of _retry
        self._retry_delay = RETRY_MIN_S
        self._round = 0  # refused predictions left to re-send in the current round
        self._logged: set[str] = set()  # refusal reasons already logged (each once)
        self._tls_mismatch = False  # a plain client found a TLS listener after start: said once, not retried
        self._extra_out: collections.deque[tuple[str, bytes, int, bool]] = collections.deque()
        self._inflight: dict[int, int] = {}  # mid -> seq (or _NOT_PREDICTION); pump thread only
        self._cursor = 0  # next seq to hand to paho
        self._connected = False
        self._ever_connected = False
        self._first_attempt = threading.Event()
        self._refusal: Any = None  # CONNACK reason that refused us
        self._rebuild = False
        self._stopping = False
        self._pump: threading.Thread | None = None
        self._closed_spool = {"pending": 0, "dropped": 0, "bytes": 0, "unspooled": 0}  # what stats() reports after stop()
        self._counts = {"published": 0, "acked": 0, "rejected": 0, "reconnects": 0, "metrics_skipped": 0}
        self.last_error: str | None = None
        self.publish_refused: str | None = None  # the latest PUBACK failure reason

    # ------------------------------------------------------------ lifecycle

    def start(self, wait_s: float = 5.0) -> "Publisher":
        """Open the spool and connect. Waits at most `wait_s` for the first connection attempt."""
        self._spool = Spool(self.spool_dir, self.spool_max_bytes, reserve_bytes=self.spool_reserve_bytes)
        try:
            if self._spool.recovered:
                log.info("spool %s: %d predictions from before the restart wait to be sent",
                         self.spool_dir, self._spool.recovered)
            if self.broker.embedded:
                self._embedded = EmbeddedBroker(self.broker.port, self.broker.host).start()
                self.broker = self.broker.replace(port=self._embedded.port)
                log.info("embedded broker on %s", self._embedded.url)
            self._cursor = self._spool.first_pending()
            self._connect_first(wait_s)
        except BaseException:
            self._teardown()
            raise
        self._pump = threading.Thread(target=self._pump_main, name=f"mqtt-pump-{self.device_id}", daemon=True)
        self._pump.start()
        return self

    def _connect_first(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        connected_tcp = self._new_client()
        if connected_tcp and self._protocol == "5" and self.broker.protocol == "auto":
            # amqtt (3.1.1 only) neither answers nor closes an MQTT 5 CONNECT that carries a will
            if not self._first_attempt.wait(min(CONNACK_WAIT_S, wait_s)) and not self._stopping:
                self._rebuild = True
        if not self._rebuild and not self._first_attempt.wait(max(0.0, deadline - time.monotonic())):
            return  # slow network: go on, the pump keeps trying
        if self._rebuild:  # no CONNACK to MQTT 5: a TLS port, or a broker that speaks MQTT 3.1.1 only
            self._refuse_tls_port()
            log.info("broker %s speaks MQTT 3.1.1 only; using 3.1.1", self.broker.url)
            self._drop_client()
            self._protocol, self._refusal, self._rebuild = "3.1.1", None, False
            self._first_attempt.clear()
            self._new_client()
            self._first_attempt.wait(max(0.0, deadline - time.monotonic()))
        if self._refusal is not None:
            fatal = mq.refusal_error(self.broker, self._refusal, self.device_id)
            if fatal is not None:
                raise fatal
            self._log_once(f"connack {self._refusal}")
            log.warning("broker %s refused the connection for now: %s; spooling and retrying",
                        self.broker.url, self._refusal)
        elif not self._ever_connected and connected_tcp:
            self._refuse_tls_port()  # closed before any CONNACK

    def _refuse_tls_port(self) -> None:
        if not self.broker.tls and mq.speaks_tls(self.broker.host, self.broker.port):
            raise mq.tls_port_error(self.broker)

    def stop(self, timeout: float = 5.0) -> None:
        """Drain the spool for at most `timeout` s (while connected), mark the device offline, close."""
        if self._spool is None:
            return
        deadline = time.monotonic() + timeout
        # what the broker refused is not waited for: it stays spooled for the next start
        while self._connected and (self._spool.pending > len(self._retry) or self._extra_out) and time.monotonic() < deadline:
            with self._cond:
                self._cond.notify_all()
                self._cond.wait(0.05)
        self._stopping = True
        with self._cond:
            self._cond.notify_all()
        if self._pump is not None:
            self._pump.join(max(1.0, deadline - time.monotonic()))
        client = self._client
        if client is not None and self._connected:
            offline = status_payload(self.device_id, "offline", time.time(), {**self._status_extra, "reason": "stopped"})
            info = client.publish(status_topic(self.device_id), encode(offline), qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.5, min(2.0, deadline - time.monotonic())))
            except (RuntimeError, ValueError):  # not connected any more: the will says offline
                pass
        self._teardown()

    def _teardown(self) -> None:
        self._drop_client()
        if self._spool is not None:
            sp = self._spool
            self._closed_spool = {"pending": sp.pending, "dropped": sp.dropped, "bytes": sp.bytes, "unspooled": sp.unspooled}
            self._spool = None
            sp.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> "Publisher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ the caller's side

    def publish_prediction(self, payload: dict[str, Any]) -> int:
        """Spool one prediction (adds `seq` and `ts`) and return its seq. Never waits on the network."""
        spool = self._spool
        if spool is None:
            raise DeviceError("publisher: publish_prediction() before start() or after stop()")
        with self._publish_lock:
            seq = spool.next_seq
            spool.append(seq, self._topic, encode({**payload, "seq": seq, "ts": time.time()}))
            self._counts["published"] += 1
        self._wake()
        return seq

    def _wake(self) -> None:
        # the pump sets _idle under the lock *before* it checks for work, so a producer that sees
        # _idle False has already made work the pump will see: no wakeup is lost
        if self._idle:
            with self._cond:
                self._cond.notify()

    def publish_metrics(self, values: dict[str, Any]) -> None:
        """QoS 0, only while connected (metrics are periodic: the next one replaces a lost one)."""
        if not self._connected:
            self._counts["metrics_skipped"] += 1
            return
        body = metrics_payload(self.device_id, time.time(), values, self._publisher_counts())
        self._queue_extra(metrics_topic(self.device_id), encode(body), 0, False)

    def set_status(self, extra: dict[str, Any]) -> None:
        """Merge `extra` into the retained online status and publish it (again on every reconnect)."""
        self._status_extra.update(extra)
        if self._connected:
            self._queue_extra(status_topic(self.device_id), self._online_status(), 1, True)

    def stats(self) -> dict[str, Any]:
        spool = self._spool
        return {
            **self._publisher_counts(),
            "metrics_skipped": self._counts["metrics_skipped"],
            "connected": self._connected,
            "protocol": self._protocol,
            "spool_bytes": spool.bytes if spool else self._closed_spool["bytes"],
            "spool_error": spool.disk_error if spool else None,  # why predictions are held in memory now
            "publish_refused": self.publish_refused,
            "last_error": self.last_error,
        }

    def _publisher_counts(self) -> dict[str, int]:
        spool = self._spool
        return {
            "published": self._counts["published"],  # predictions accepted by publish_prediction
            "acked": self._counts["acked"],  # PUBACKs received for them
            "rejected": self._counts["rejected"],  # PUBACKs that refused one (>= 0x80): kept and sent again later
            # waiting in the spool for a PUBACK now (after stop: left on disk for the next start)
            "spooled": spool.pending if spool else self._closed_spool["pending"],
            "spool_dropped": spool.dropped if spool else self._closed_spool["dropped"],  # pushed out of a full spool
            # could not be written to disk (full, I/O error, below the free-space reserve): sent from memory
            "unspooled": spool.unspooled if spool else self._closed_spool["unspooled"],
            "reconnects": self._counts["reconnects"],
        }

    def _queue_extra(self, topic: str, data: bytes, qos: int, retain: bool) -> None:
        self._extra_out.append((topic, data, qos, retain))
        self._wake()

    def _online_status(self) -> bytes:
        return encode(status_payload(self.device_id, "online", time.time(), self._status_extra))

    # ------------------------------------------------------------ paho client

    def _new_client(self) -> bool:
        """Make, connect and start a client; True when the TCP (and TLS) connection is up."""
        c = mq.make_client(self.broker, self.device_id, protocol=self._protocol, persistent=True)
        will = status_payload(self.device_id, "offline", time.time(), {**self._status_extra, "reason": "connection lost"})
        c.will_set(status_topic(self.device_id), encode(will), qos=1, retain=True)
        c.max_inflight_messages_set(self.window + 16)  # our window bounds it; + room for status/metrics
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        if self._ha_configs:
            c.on_message = self._on_message
        self._client = c
        self._inflight.clear()  # a new client starts over: everything unacked goes out again
        self._retry.clear()
        self._retry_at, self._round = float("inf"), 0
        self._cursor = self._spool.first_pending()
        kw = mq.connect_kwargs(self._protocol, True, self.broker.keepalive)
        try:
            c.connect(self.broker.host, self.broker.port, **kw)
        except OSError as e:
            fatal = mq.connect_error(self.broker, e)
            if fatal is not None:
                raise fatal from None
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("broker %s not reachable (%s); spooling until it is", self.broker.url, e)
            self._first_attempt.set()
            c.connect_async(self.broker.host, self.broker.port, **kw)
            c.loop_start()
            return False
        c.loop_start()
        return True

    def _drop_client(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        self._connected = False
        try:
            c.disconnect()
        except Exception:  # already gone
            pass
        c.loop_stop()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self._refusal = reason
            self.last_error = f"refused: {reason}"
            if str(reason) in mq.PROTOCOL_REFUSED and self.broker.protocol == "auto" and self._protocol == "5":
                self._rebuild = True  # the pump (or _connect_first) reconnects with 3.1.1
            elif self._pump is not None and self._log_once(f"connack {reason}"):  # start() raises or logs it itself
                log.warning("broker %s refused the connection (client id %r): %s", self.broker.url, self.device_id, reason)
        else:
            self._refusal = None
            if self._ever_connected:
                self._counts["reconnects"] += 1
            self._ever_connected = True
            self._connected = True
            if self._retry:
                self._retry_at = time.monotonic()  # what the broker refused: try again now
            if self._ha_configs:
                client.subscribe(HA_STATUS_TOPIC, qos=1)
                self._queue_ha_configs()
            self._extra_out.append((status_topic(self.device_id), self._online_status(), 1, True))
        self._first_attempt.set()
        self._wake()

    def _queue_ha_configs(self) -> None:
        for topic, data in self._ha_configs:
            self._extra_out.append((topic, data, 1, True))

    def _on_message(self, client, userdata, msg) -> None:
        """Home Assistant (re)started: it announces `online` on homeassistant/status; send the configs again.
        A retained birth message delivered on subscribe is old news: the configs just went out on connect."""
        if client is not self._client or msg.topic != HA_STATUS_TOPIC or msg.retain or msg.payload.strip() != b"online":
            return
        self._queue_ha_configs()
        self._wake()

    def _on_connect_fail(self, client, userdata) -> None:
        self._first_attempt.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if client is self._client:
            self._connected = False
            if not self._ever_connected and self._refusal is None:
                # closed before any CONNACK: a TLS port, or what an MQTT 3.1.1-only broker (amqtt) does with MQTT 5
                if self._protocol == "5" and self.broker.protocol == "auto":
                    self._rebuild = True
                self._first_attempt.set()
            if self._ever_connected and not self._stopping:
                log.warning("lost broker %s (%s); spooling", self.broker.url, reason)

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        if client is self._client:
            self._acks.append((mid, reason))
            self._wake()

    def _log_once(self, key: str) -> bool:
        """True the first time `key` is seen: each distinct refusal is logged once, not on every retry."""
        if key in self._logged:
            return False
        self._logged.add(key)
        return True

    # ------------------------------------------------------------ pump thread

    def _pump_main(self) -> None:
        last_save = time.monotonic()
        while not self._stopping:
            with self._cond:
                self._idle = True
                if not self._has_work():
                    self._cond.wait(0.2)
                self._idle = False
            try:
                self._pump_once()
                if time.monotonic() - last_save > STATE_SAVE_EVERY_S:
                    self._spool.save_state()
                    last_save = time.monotonic()
            except Exception as e:  # a bug or a full disk must not kill delivery silently: log and go on
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("mqtt pump")
                time.sleep(0.2)
        self._take_acks()

    def _has_work(self) -> bool:
        if self._acks or self._rebuild:
            return True
        if not self._connected or len(self._inflight) >= self.window:
            return bool(self._extra_out) and self._connected
        return (bool(self._extra_out) or self._cursor < self._spool.next_seq or self._round > 0
                or bool(self._retry) and time.monotonic() >= self._retry_at)

    def _pump_once(self) -> None:
        if self._rebuild:
            self._rebuild = False
            if self._tls_mismatch or not self.broker.tls and mq.speaks_tls(self.broker.host, self.broker.port):
                if not self._tls_mismatch:
                    log.error("%s", mq.tls_port_error(self.broker))
                self._tls_mismatch = True  # say it once; paho keeps retrying, the spool keeps filling
                return
            log.info("broker %s now speaks MQTT 3.1.1 only; reconnecting with 3.1.1", self.broker.url)
            self._drop_client()
            self._protocol = "3.1.1"
            self._new_client()
            return
        client = self._client
        if self._connected and client is not None:
            while self._extra_out:
                topic, data, qos, retain = self._extra_out.popleft()
                self._inflight[client.publish(topic, data, qos=qos, retain=retain).mid] = _NOT_PREDICTION
            room = self._resend_refused(client, self.window - len(self._inflight))
            if room > 0:
                for seq, topic, data in self._spool.pending_from(self._cursor, min(room, 256)):
                    # paho keeps a QoS 1 message it could not send (rc NO_CONN) and resends it on reconnect
                    self._inflight[client.publish(topic, data, qos=self.qos).mid] = seq
                    self._cursor = seq + 1
        self._take_acks()

    def _resend_refused(self, client, room: int) -> int:
        """Once the back-off has passed, hand refused predictions to paho again (at most `room`); the room left."""
        if not self._round:
            if not self._retry or time.monotonic() < self._retry_at:
                return room
            self._round = len(self._retry)  # refused again during this round: they wait for the next one
            self._retry_at = float("inf")  # the next refusal schedules the next round
        while self._round and self._retry and room > 0:
            seq = self._retry.popleft()
            self._round -= 1
            rec = self._spool.record(seq)
            if rec is not None:  # None: dropped from a full spool meanwhile
                self._inflight[client.publish(rec[0], rec[1], qos=self.qos).mid] = seq
                room -= 1
        return room

    def _take_acks(self) -> None:
        seqs = []
        while self._acks:
            mid, reason = self._acks.popleft()
            seq = self._inflight.pop(mid, None)
            if reason is not None and reason.is_failure:
                self._refused(seq, reason)
            elif seq is not None and seq >= 0:  # status/metrics map to _NOT_PREDICTION
                seqs.append(seq)
        if seqs:
            self._counts["acked"] += self._spool.ack_many(seqs)
            self._retry_delay = RETRY_MIN_S  # the broker takes predictions again
            if self._retry:
                self._retry_at = min(self._retry_at, time.monotonic() + RETRY_MIN_S)

    def _refused(self, seq: int | None, reason: Any) -> None:
        """A PUBACK with a failure reason: not delivered. The record stays spooled and waits for a retry."""
        name = f"{reason} (0x{reason.value:02x})"
        self.publish_refused, self.last_error = name, f"publish refused: {name}"
        if self._log_once(f"puback {name}"):
            log.warning("broker %s refused a publish: %s; the predictions stay in the spool and are sent again "
                        "on reconnect or after a back-off (check the broker's ACL and quotas for %r)",
                        self.broker.url, name, self.device_id)
            self._status_extra["publish_refused"] = name
            self._extra_out.append((status_topic(self.device_id), self._online_status(), 1, True))
        if seq is None or seq < 0:
            return  # a status or metrics message: the next one replaces it
        self._counts["rejected"] += 1
        self._retry.append(seq)
        if self._retry_at == float("inf"):
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(RETRY_MAX_S, self._retry_delay * 2)
