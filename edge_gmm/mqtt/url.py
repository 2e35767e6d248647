"""Broker addresses by URL (STYLE.md #4): `mqtt://`, `mqtts://`, and the word `embedded`.

    mqtt://[user[:password]@]host[:port][?protocol=5|3.1.1&qos=0|1|2&keepalive=S]
    mqtts://[user[:password]@]host[:port][?ca=PATH&cert=PATH&key=PATH&insecure=1&...]
    embedded | embedded:PORT | embedded://HOST:PORT   (in-process amqtt broker, MQTT 3.1.1 only)

The password may also come from a file (`password_file`), so it need not sit in shell history or a
process listing. It never appears in repr() or in `BrokerConfig.display()`, which is what logs print.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from edge_gmm.errors import ConfigError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "embedded": 1883}
PROTOCOLS = ("auto", "5", "3.1.1")  # auto = MQTT 5, falling back to 3.1.1 when the broker only speaks that
QUERY_KEYS = ("ca", "cert", "key", "insecure", "protocol", "qos", "keepalive")


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed
    ca: str | None = None  # CA bundle to verify the broker; None with tls = the system store
    cert: str | None = None  # client certificate (mutual TLS)
    key: str | None = None  # client key
    insecure: bool = False  # skip hostname verification (self-signed lab brokers); still verifies the chain
    protocol: str = "auto"
    qos: int = 1
    keepalive: int = 30
    embedded: bool = False  # start an in-process broker on host:port (see mqtt.broker)

    @property
    def url(self) -> str:
        """The address without credentials, for logs and messages."""
        if self.embedded:
            return f"embedded://{self.host}:{self.port}"
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def display(self) -> str:
        extra = f" (MQTT {self.protocol})" if self.protocol != "auto" else ""
        return self.url + extra

    def replace(self, **changes) -> "BrokerConfig":
        return dataclasses.replace(self, **changes)


def parse_mqtt_url(url: str, *, password_file: str | Path | None = None) -> BrokerConfig:
    """Parse a broker URL into a BrokerConfig; a wrong URL raises ConfigError saying what is accepted."""
    text = (url or "").strip()
    if text == "embedded" or text.startswith("embedded:") and not text.startswith("embedded://"):
        port_text = text.partition(":")[2] or str(DEFAULT_PORTS["embedded"])
        text = f"embedded://127.0.0.1:{port_text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"broker URL {_safe(url)!r}: scheme must be mqtt://, mqtts:// or the word 'embedded'",
            hint="for example mqtt://127.0.0.1:1883 or mqtts://user@broker.local:8883?ca=ca.pem",
        )
    try:
        port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"broker URL {_safe(url)!r}: the port is not a number in 0..65535") from None
    host = parts.hostname or "127.0.0.1"
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = [k for k in query if k not in QUERY_KEYS]
    if unknown:
        raise ConfigError(f"broker URL: unknown option {unknown[0]!r}", hint=f"options: {', '.join(QUERY_KEYS)}")
    protocol = {"5": "5", "5.0": "5", "v5": "5", "3.1.1": "3.1.1", "311": "3.1.1", "v311": "3.1.1"}.get(
        query.get("protocol", "auto"), query.get("protocol", "auto")
    )
    if protocol not in PROTOCOLS:
        raise ConfigError(f"broker URL: protocol must be 5 or 3.1.1, got {protocol!r}")
    qos = _int_option(query, "qos", 1)
    if qos not in (0, 1, 2):
        raise ConfigError(f"broker URL: qos must be 0, 1 or 2, got {qos}")
    password = unquote(parts.password) if parts.password is not None else None
    if password_file is not None:
        p = Path(password_file)
        if not p.is_file():
            raise ConfigError(f"password file {p}: no such file")
        lines = p.read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""  # first line; a trailing newline is not part of it
    files = {k: query.get(k) or None for k in ("ca", "cert", "key")}
    for k, v in files.items():
        if v and not Path(v).is_file():
            raise ConfigError(f"broker URL: {k}={v}: no such file")
    if (files["cert"] is None) != (files["key"] is None):
        raise ConfigError("broker URL: a client certificate needs both cert= and key=")
    embedded = scheme == "embedded"
    if embedded and (parts.username or any(files.values())):
        raise ConfigError("the embedded broker is plain MQTT on loopback: no credentials or TLS options")
    return BrokerConfig(
        host=host,
        port=port,
        tls=scheme == "mqtts" or any(files.values()),
        username=unquote(parts.username) if parts.username else None,
        password=password,
        ca=files["ca"],
        cert=files["cert"],
        key=files["key"],
        insecure=query.get("insecure", "0") in ("1", "true", "yes"),
        protocol="3.1.1" if embedded else protocol,  # amqtt speaks 3.1.1 only (FIELD-NOTES)
        qos=qos,
        keepalive=_int_option(query, "keepalive", 30),
        embedded=embedded,
    )


def _int_option(query: dict, key: str, default: int) -> int:
    try:
        return int(query.get(key, default))
    except ValueError:
        raise ConfigError(f"broker URL: {key} must be an integer, got {query[key]!r}") from None


def _safe(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            return url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return url
