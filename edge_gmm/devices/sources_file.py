"""The sources file: which source feeds each modality of the bundle (YAML, TOML or JSON).

    imu: serial:///dev/ttyACM0?baud=921600
    env: serial:///dev/ttyACM0            # the same URI: one reader feeds both modalities
    audio: replay://data/machine-health?loop=1
    camera:
      uri: "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"
      timeout_s: 2.0                      # stale after 2 s without a frame (default: the bundle's sensor spec)
      sensor: cam0                        # the name the source itself uses, when it differs

The entries may also sit under a top-level `sources:` key. Modalities the file leaves out are reported
`missing` and masked. `--sources` also takes one URI instead of a file; it then feeds every modality
(or those in its `?modalities=a,b`). `edge-gmm record` reads the same file (`parse_sources`): there the
keys name the sensors it records, and `audio://...?rate=` / `camera://...?rate=&size=` say their specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_gmm.config import SensorSpec, from_dict, read_mapping
from edge_gmm.errors import ConfigError
from edge_gmm.devices.sources import SourceSpec, parse_uri

FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


@dataclass
class SourceEntry:
    uri: str
    sensor: str = ""  # the name the source uses for this modality ("" = the modality's own name)
    timeout_s: float = 0.0  # overrides the sensor spec's stale timeout; 0 = keep it (non-finite: refused by from_dict)


@dataclass
class SourcesPlan:
    """What the loop opens: one SourceSpec per distinct URI, and per-modality stale timeouts."""

    specs: list[SourceSpec]
    timeouts: dict[str, float]  # modality -> seconds without samples before it is stale

    @property
    def fed(self) -> list[str]:
        return [m for s in self.specs for m in s.modalities]


def looks_like_file(value: str) -> bool:
    return "://" not in value and Path(value).suffix.lower() in FILE_SUFFIXES


def load_sources(value: str, sensors: list[SensorSpec]) -> SourcesPlan:
    """`--sources` value (a file or one URI) → SourcesPlan for the bundle's `sensors`."""
    names = [s.name for s in sensors]
    plan = parse_sources(value, check=lambda modalities: _check_known(modalities, names, value))
    if not looks_like_file(value):
        plan.specs[0].modalities = plan.specs[0].modalities or list(names)
        _check_known(plan.specs[0].modalities, names, value)
    plan.timeouts = {**{s.name: s.stale_after_s for s in sensors}, **plan.timeouts}
    return plan


def parse_sources(value: str, check=None) -> SourcesPlan:
    """`--sources` value (a file or one URI) → SourcesPlan, with no bundle to check against (what `record`
    opens): a single URI feeds the modalities of its `?modalities=`, none when it names none. `check(modalities)`
    sees each file entry's modality before its URI is parsed. `timeouts` holds only those the file sets."""
    if not looks_like_file(value):
        spec = parse_uri(value)
        wanted = spec.options.pop("modalities", "")
        spec.modalities = [m.strip() for m in wanted.split(",") if m.strip()]
        return SourcesPlan([spec], {})

    data = read_mapping(value)
    if isinstance(data.get("sources"), dict) and len(data) == 1:
        data = data["sources"]
    timeouts: dict[str, float] = {}
    by_uri: dict[tuple[str, str], SourceSpec] = {}  # (scheme, target): one port, one reader
    for modality, raw in data.items():
        if isinstance(raw, str):
            raw = {"uri": raw}
        entry = from_dict(SourceEntry, raw, source=value, where=modality)
        if check is not None:
            check([modality])
        if entry.timeout_s < 0:
            raise ConfigError(f"{value}: {modality}.timeout_s must be >= 0 seconds (0 = the bundle's), got {entry.timeout_s}")
        parsed = parse_uri(entry.uri)
        parsed.options.pop("modalities", None)
        spec = by_uri.setdefault((parsed.scheme, parsed.target), parsed)
        if spec is not parsed:  # the same device named twice: merge its options, refuse a contradiction
            for k, v in parsed.options.items():
                if spec.options.setdefault(k, v) != v:
                    raise ConfigError(f"{value}: {spec.modalities[0]!r} and {modality!r} share {parsed.target!r} "
                                      f"but ask for {k}={spec.options[k]} and {k}={v}", hint="give both the same options")
        spec.modalities.append(modality)
        if entry.sensor:
            spec.rename[entry.sensor] = modality
        if entry.timeout_s > 0:
            timeouts[modality] = entry.timeout_s
    if not by_uri:
        raise ConfigError(f"{value}: no sources", hint="map at least one modality to a URI, e.g. 'imu: serial:///dev/ttyACM0'")
    return SourcesPlan(list(by_uri.values()), timeouts)


def _check_known(modalities: list[str], names: list[str], where: str) -> None:
    for m in modalities:
        if m not in names:
            raise ConfigError(f"{where}: {m!r} is not a modality of the bundle", hint=f"the bundle's modalities: {', '.join(names)}")
