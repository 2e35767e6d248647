"""paho-mqtt 2.x clients configured from a BrokerConfig, shared by the publisher and the subscriber.

Also tells a misconfiguration (a refused password or client id, TLS against a plain port or the other
way round: ConfigError, exit 2, nothing restarts it) from a broker that is merely down or busy (None:
retry and spool). Passwords never reach a message: they only go to `username_pw_set`.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from edge_gmm.errors import ConfigError, DeviceError, MissingDependencyError
from edge_gmm.mqtt.url import BrokerConfig

SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent session outlives a week-long outage of the device
AUTH_REFUSED = ("Bad user name or password", "Not authorized")
ID_REFUSED = ("Client identifier not valid",)  # MQTT 5 0x85; paho names MQTT 3.1.1 rc 2 the same
PROTOCOL_REFUSED = ("Unsupported protocol version",)
# CONNACK refusals a retry may cure (MQTT 5 0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F; 3.1.1 rc 3): not errors at start
TRANSIENT_REFUSED = ("Server unavailable", "Server busy", "Quota exceeded", "Use another server", "Server moved",
                     "Connection rate exceeded")
PROBE_S = 1.0


def paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise MissingDependencyError("MQTT needs paho-mqtt 2.x: pip install 'edge-gmm[device]'") from None
    return mqtt


def make_client(broker: BrokerConfig, client_id: str, *, protocol: str, persistent: bool):
    """A paho Client (not yet connected). `protocol` is '5' or '3.1.1'."""
    mqtt = paho()
    v5 = protocol == "5"
    kw: dict[str, Any] = {} if v5 else {"clean_session": not persistent}
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        **kw,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        try:
            client.tls_set(ca_certs=broker.ca, certfile=broker.cert, keyfile=broker.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError) as e:
            raise DeviceError(
                f"TLS setup for {broker.url} failed: {getattr(e, 'reason', None) or e}",
                hint="check the ca=, cert= and key= files (PEM) in the broker URL",
            ) from None
        client.tls_insecure_set(broker.insecure)
    client.reconnect_delay_set(min_delay=0.25, max_delay=4)  # type: ignore[arg-type]  # floats work
    return client


def connect_kwargs(protocol: str, persistent: bool, keepalive: int) -> dict[str, Any]:
    """Arguments of connect()/connect_async(): MQTT 5 sessions persist via clean_start=False + expiry."""
    if protocol != "5":
        return {"keepalive": keepalive}
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = SESSION_EXPIRY_S
    return {"keepalive": keepalive, "clean_start": not persistent, "properties": props}


def refusal_error(broker: BrokerConfig, reason: Any, client_id: str = "") -> ConfigError | None:
    """The ConfigError for a CONNACK that refused us, None when a retry may cure it (the password is never shown)."""
    name = str(reason)
    if name in TRANSIENT_REFUSED:
        return None
    if name in AUTH_REFUSED:
        who = f"user {broker.username!r}" if broker.username else "an anonymous client"
        return ConfigError(
            f"broker {broker.url} refused {who}{f' (client id {client_id!r})' if client_id else ''}: {name.lower()}",
            hint="check the user name and password (in the URL or --password-file) and the broker's ACL for this "
            "client id; the password is not shown",
        )
    if name in ID_REFUSED:
        return ConfigError(
            f"broker {broker.url} refused the client id {client_id!r} (the device id): {name.lower()}",
            hint="use a device id the broker accepts (check its client id rules, e.g. a required prefix or length)",
        )
    return ConfigError(f"broker {broker.url} refused the connection: {name}")


def connect_error(broker: BrokerConfig, exc: BaseException) -> ConfigError | None:
    """A ConfigError for a connect failure that retrying cannot fix (TLS), else None (broker down: retry)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigError(
            f"TLS: cannot verify the certificate of {broker.url}: {exc.verify_message}",
            hint="pass the CA that signed the broker's certificate with ?ca=PATH; its name must match the host",
        )
    if broker.tls and speaks_plain_mqtt(broker.host, broker.port):
        return plain_port_error(broker)
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        return ConfigError(
            f"TLS handshake with {broker.url} failed: {exc.reason or exc}",
            hint="is the port a TLS listener? does the broker require a client certificate (cert=, key=)?",
        )
    return None


def plain_port_error(broker: BrokerConfig) -> ConfigError:
    return ConfigError(
        f"{broker.url}: this port speaks plain MQTT, not TLS",
        hint=f"use mqtt://{broker.host}:{broker.port} or the broker's TLS port (often 8883)",
    )


def tls_port_error(broker: BrokerConfig) -> ConfigError:
    return ConfigError(
        f"{broker.url}: this port is a TLS listener; plain MQTT cannot talk to it",
        hint=f"use mqtts://{broker.host}:{broker.port} (with ?ca=PATH if the broker's CA is not in the system store)",
    )


def speaks_tls(host: str, port: int, timeout: float = PROBE_S) -> bool:
    """True when host:port answers a TLS ClientHello as a TLS server (handshake done, or a TLS alert back)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # only asking whether it speaks TLS at all
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw):
            return True
    except ssl.SSLError as e:
        return "ALERT" in str(e.reason or "")  # an alert is a TLS answer; WRONG_VERSION_NUMBER / EOF are not
    except OSError:
        return False


# MQTT 3.1.1 CONNECT, clean session, keepalive 5 s, client id "edge-gmm-probe": every MQTT broker answers CONNACK
_PROBE_CONNECT = bytes([0x10, 26, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 5, 0, 14]) + b"edge-gmm-probe"


def speaks_plain_mqtt(host: str, port: int, timeout: float = PROBE_S) -> bool:
    """True when host:port answers a plain MQTT CONNECT with a CONNACK."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(_PROBE_CONNECT)
            answer = s.recv(4)
            if answer[:1] == b"\x20":
                s.sendall(b"\xe0\x00")  # DISCONNECT: leave politely
                return True
    except OSError:
        pass
    return False
