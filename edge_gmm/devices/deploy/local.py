"""The workstation side of a deploy: the bundle's identity and files, and the edge-gmm wheel for the device."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import edge_gmm
from edge_gmm.errors import ConfigError, DeviceError

REPO = Path(edge_gmm.__file__).resolve().parents[1]
# not shipped: engines are built on the device; .source-sha256 is the local tar-extraction stamp
_LOCAL_ONLY = ("engines", ".source-sha256")


@dataclass(frozen=True)
class LocalBundle:
    path: Path  # what the user named
    root: Path  # the directory holding manifest.json
    name: str
    version: str
    manifest_sha256: str
    precision: str
    precisions: tuple[str, ...]
    signed: bool

    @classmethod
    def open(cls, path: str | Path) -> "LocalBundle":
        from edge_gmm.runtime.bundle import MANIFEST, Bundle

        b = Bundle.open(path)  # structure only; verify() checks the bytes here, the device checks them again
        digest = hashlib.sha256((b.root / MANIFEST).read_bytes()).hexdigest()
        return cls(
            path=Path(path),
            root=b.root,
            name=b.name,
            version=str(b.manifest["model"].get("version", "0")),
            manifest_sha256=digest,
            precision=b.default_precision(),
            precisions=tuple(b.precisions),
            signed=b.signed,
        )

    def verify(self, pubkey: str | None) -> list[str]:
        """The local copy's hashes (and signature with `pubkey`); engines/ stays here, so it is not checked."""
        from edge_gmm.runtime.bundle import Bundle

        return Bundle.open(self.path).verify(pubkey, engines=False)

    @property
    def release(self) -> str:
        """releases/<model>-<version>-<sha8>: the manifest hash covers every artifact, so equal name = equal bytes."""
        return f"{_slug(self.name)}-{_slug(self.version)}-{self.manifest_sha256[:8]}"

    def files(self) -> list[Path]:
        return [
            f
            for f in sorted(self.root.rglob("*"))
            if f.is_file() and f.relative_to(self.root).parts[0] not in _LOCAL_ONLY
        ]

    def size_mb(self) -> float:
        return sum(f.stat().st_size for f in self.files()) / (1 << 20)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+]+", "_", text).strip("_") or "model"


def wheel_command(out_dir: str) -> list[str]:
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out_dir, str(REPO)]


def build_wheel(explicit: str | None = None) -> Path:
    """The edge-gmm wheel to install on the device: `--wheel FILE`, or built from this checkout."""
    if explicit:
        p = Path(explicit)
        if not (p.is_file() and p.suffix == ".whl"):
            raise ConfigError(f"--wheel {explicit}: not a .whl file")
        return p
    if not (REPO / "pyproject.toml").is_file():
        raise ConfigError(
            "edge-gmm is missing on the device and this install is not a checkout to build a wheel from",
            hint="pass --wheel edge_gmm-X-py3-none-any.whl, or `pip install 'edge-gmm[device]'` on the device",
        )
    out = tempfile.mkdtemp(prefix="edge-gmm-wheel-")
    proc = subprocess.run(wheel_command(out), capture_output=True, text=True, timeout=600)
    wheels = sorted(Path(out).glob("edge_gmm-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DeviceError(f"building the edge-gmm wheel failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return wheels[-1]


class SharedWheel:
    """build_wheel for deploys running in parallel threads: the checkout's wheel is built once, when the first
    device lacks edge-gmm (two `pip wheel` runs of one checkout race in its build/ folder)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._built: Path | None = None

    def __call__(self, explicit: str | None = None) -> Path:
        if explicit:
            return build_wheel(explicit)
        with self._lock:
            if self._built is None:
                self._built = build_wheel()
            return self._built


def version_tuple(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:3])
