"""The fleet inventory `edge-gmm deploy --inventory` and `edge-gmm device --inventory` read (TOML, YAML or JSON).

    [defaults]                        # every host's values unless the host says otherwise
    profile = "jetson-orin-nano"
    sources = "devices/examples/sources.yaml"
    mqtt = "mqtt://broker.lan:1883"

    [[hosts]]
    host = "nvidia@line-1.local"
    device_id = "line-1"

    [[hosts]]
    host = "nvidia@line-2.local:2222"
    device_id = "line-2"
    sources = "line-2-sources.yaml"  # relative paths are relative to the inventory file

Precedence per key: the host's entry, then [defaults], then the command line (whose own defaults come last).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edge_gmm.config import from_dict, read_mapping
from edge_gmm.errors import ConfigError

PATH_KEYS = ("sources", "identity", "known_hosts", "pubkey", "profile", "wheel")  # resolved against the file's folder


@dataclass
class HostEntry:
    """One device's deploy and ssh settings; None = not set here (the next level of precedence decides)."""

    host: str | None = None
    device_id: str | None = None
    profile: str | None = None
    sources: str | None = None
    mqtt: str | None = None
    status_mqtt: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool | None = None
    remote_python: str | None = None
    remote_home: str | None = None
    systemd: bool | None = None
    service: str | None = None
    pubkey: str | None = None
    spool_max_mb: float | None = None
    run_args: str | None = None
    ha_discovery: str | None = None  # off | on: `run --ha-discovery` on the device
    wheel: str | None = None

    def merged(self, under: "HostEntry") -> "HostEntry":
        """This entry with its unset keys taken from `under`."""
        return HostEntry(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(under, f.name)
                            for f in dataclasses.fields(self)})

    def set_keys(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class _InventoryFile:
    hosts: list[dict] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)


def read_inventory(path: str | Path, cli: HostEntry | None = None) -> list[HostEntry]:
    """The hosts of an inventory file, each complete: its keys, then [defaults], then `cli`'s."""
    src = str(path)
    raw = from_dict(_InventoryFile, read_mapping(path), source=src)
    defaults = _entry(raw.defaults, src, "defaults", Path(path).parent)
    if defaults.host is not None:
        raise ConfigError(f"{src}: defaults.host: every host names itself", hint="put host = ... under each [[hosts]]")
    if not raw.hosts:
        raise ConfigError(f"{src}: no hosts", hint='add a [[hosts]] table with host = "user@device"')
    hosts = [_entry(h, src, f"hosts[{i}]", Path(path).parent).merged(defaults).merged(cli or HostEntry())
             for i, h in enumerate(raw.hosts)]
    for i, h in enumerate(hosts):
        for key in ("host", "profile", "sources", "mqtt"):
            if not getattr(h, key):
                raise ConfigError(f"{src}: hosts[{i}] has no {key}", hint=f"set {key} on the host, under [defaults] or with --{key}")
        if h.ha_discovery not in (None, "off", "on"):
            raise ConfigError(f"{src}: hosts[{i}].ha_discovery must be 'off' or 'on', got {h.ha_discovery!r}")
    _check_unique(hosts, src)
    return hosts


def _entry(data, src: str, where: str, base: Path) -> HostEntry:
    entry = from_dict(HostEntry, data, source=src, where=where)
    for key in PATH_KEYS:
        value = getattr(entry, key)
        if value and "://" not in value and not Path(value).is_absolute() and (base / value).exists():
            setattr(entry, key, str(base / value))
    return entry


def _check_unique(hosts: list[HostEntry], src: str) -> None:
    """Two entries for one device would deploy over each other in parallel."""
    seen: dict[tuple, int] = {}
    ids: dict[str, int] = {}
    for i, h in enumerate(hosts):
        key = (h.host, h.remote_home or "", h.service or "")
        if key in seen:
            raise ConfigError(f"{src}: hosts[{seen[key]}] and hosts[{i}] are the same device ({h.host})",
                              hint="give each entry its own host, remote_home or service")
        seen[key] = i
        if h.device_id and ids.setdefault(h.device_id, i) != i:
            raise ConfigError(f"{src}: hosts[{ids[h.device_id]}] and hosts[{i}] share device_id {h.device_id!r}",
                              hint="each device publishes under its own id")
