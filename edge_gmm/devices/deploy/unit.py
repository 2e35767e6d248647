"""The loop's service definition: the `edge-gmm run` command line, the systemd unit and the env file.

Both service modes run the same command: systemd expands ${EDGE_GMM_MQTT} from its EnvironmentFile, and the
`--no-systemd` supervisor does the same from the same file, so the broker password is never on a command line.
Templates live in the top-level devices/systemd/ folder with {{field}} placeholders.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_gmm.errors import ConfigError
from edge_gmm.resources import shipped_dir

TEMPLATE_DIR = shipped_dir("devices") / "systemd"
UNIT_TEMPLATE = "edge-gmm.service.in"
ENV_TEMPLATE = "edge-gmm.env.in"
_FIELD = re.compile(r"\{\{(\w+)\}\}")
_SAFE_ARG = re.compile(r"[\w@%+=:,./${}-]+")


@dataclass
class ServiceSpec:
    """What the device runs. `launcher` is the argv prefix that starts the CLI there, e.g. [".../bin/edge-gmm"]."""

    device_id: str
    home: str  # absolute remote base directory
    launcher: list[str]
    sources: str  # a remote path (uploaded sources file) or a source URI
    user: str = "root"
    model: str = ""  # "name version", for the unit's description
    service: str = "edge-gmm"
    env_file: str = ""  # absolute remote path of the env file
    extra_args: list[str] = field(default_factory=list)
    groups: str = "dialout video"
    spool_max_mb: float | None = None  # `run --spool-max-mb`; None leaves run's default

    @property
    def bundle(self) -> str:
        return f"{self.home}/current"

    def run_argv(self) -> list[str]:
        """`edge-gmm run ...` as the device will execute it (with ${EDGE_GMM_MQTT} still unexpanded)."""
        return [
            *self.launcher,
            "run",
            "--bundle", self.bundle,
            "--sources", self.sources,
            "--mqtt", "${EDGE_GMM_MQTT}",
            "--device-id", self.device_id,
            "--spool-dir", f"{self.home}/spool",
            *(["--spool-max-mb", f"{self.spool_max_mb:g}"] if self.spool_max_mb is not None else []),
            *self.extra_args,
        ]  # fmt: skip


def _template(name: str, template_dir: Path | None = None) -> str:
    path = (template_dir or TEMPLATE_DIR) / name
    if not path.is_file():
        raise ConfigError(f"{path}: service template missing", hint="run deploy from an edge-gmm checkout (devices/systemd/)")
    return path.read_text()


def _fill(text: str, values: dict[str, str], source: str) -> str:
    def sub(m: re.Match) -> str:
        if m[1] not in values:
            raise ConfigError(f"{source}: unknown placeholder {{{{{m[1]}}}}}", hint=f"known: {', '.join(sorted(values))}")
        return values[m[1]]

    return _FIELD.sub(sub, text)


def systemd_quote(arg: str) -> str:
    """One ExecStart argument: '%' doubled (systemd specifiers), quoted when it holds spaces or quotes."""
    arg = arg.replace("%", "%%")
    if _SAFE_ARG.fullmatch(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec: ServiceSpec, template_dir: Path | None = None) -> str:
    values = {
        "device_id": spec.device_id,
        "model": spec.model or "model",
        "home": spec.home,
        "user": spec.user,
        "env_file": spec.env_file,
        "exec_start": " ".join(systemd_quote(a) for a in spec.run_argv()),
        "service": spec.service,
        "groups": spec.groups,
    }
    return _fill(_template(UNIT_TEMPLATE, template_dir), values, UNIT_TEMPLATE)


def render_env(spec: ServiceSpec, mqtt_url: str, template_dir: Path | None = None) -> tuple[str, str]:
    """(env file text, the same with the broker password masked, for printing)."""
    for ch in "\n\r":
        if ch in mqtt_url:
            raise ConfigError("--mqtt: the broker URL must be one line")
    text = _template(ENV_TEMPLATE, template_dir)
    values = {"device_id": spec.device_id, "home": spec.home}
    return (
        _fill(text, {**values, "mqtt": mqtt_url}, ENV_TEMPLATE),
        _fill(text, {**values, "mqtt": mask_password(mqtt_url)}, ENV_TEMPLATE),
    )


def mask_password(url: str) -> str:
    """mqtt://user:secret@host -> mqtt://user:***@host."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def fingerprint(*parts: object) -> str:
    """A short hash of what defines the running service (command, env, unit): equal means nothing to restart."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
