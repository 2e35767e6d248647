"""paho-mqtt 2.x clients configured from a BrokerConfig, shared by the publisher and the subscriber.

Also turns what can go wrong on connect into DeviceErrors with something to act on. Passwords never
reach a message: they only go to `username_pw_set`.
"""

from __future__ import annotations

import ssl
from typing import Any

from edge_gmm.errors import DeviceError, MissingDependencyError
from edge_gmm.mqtt.url import BrokerConfig

SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent session outlives a week-long outage of the device
AUTH_REFUSED = ("Bad user name or password", "Not authorized")
PROTOCOL_REFUSED = ("Unsupported protocol version",)


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


def refusal_error(broker: BrokerConfig, reason: Any) -> DeviceError:
    """The DeviceError for a CONNACK that refused us (the password is never part of the message)."""
    name = str(reason)
    if name in AUTH_REFUSED:
        who = f"user {broker.username!r}" if broker.username else "an anonymous client"
        return DeviceError(
            f"broker {broker.url} refused {who}: {name.lower()}",
            hint="check the user name and password (in the URL or --password-file); the password is not shown",
        )
    return DeviceError(f"broker {broker.url} refused the connection: {name}")


def connect_error(broker: BrokerConfig, exc: BaseException) -> DeviceError | None:
    """A DeviceError for a connect failure that retrying cannot fix (TLS), else None (broker down: retry)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeviceError(
            f"TLS: cannot verify the certificate of {broker.url}: {exc.verify_message}",
            hint="pass the CA that signed the broker's certificate with ?ca=PATH; its name must match the host",
        )
    if isinstance(exc, ssl.SSLError):
        return DeviceError(
            f"TLS handshake with {broker.url} failed: {exc.reason or exc}",
            hint="is the port a TLS listener? does the broker require a client certificate (cert=, key=)?",
        )
    return None
