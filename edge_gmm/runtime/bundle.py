"""The deploy bundle: manifest schema, reader, verifier and writer (device side: no torch, no onnx).

A bundle is a directory (or a .tar of one) holding:

    manifest.json          everything the device needs without the training code (docs/bundle.md)
    manifest.json.sha256   sha256 of manifest.json: catches accidental corruption of the manifest itself
    manifest.json.sig      optional ed25519 signature over the manifest bytes (raw 64 bytes)
    model.<precision>.onnx the artifacts, each listed in the manifest with its sha256
    engines/               TensorRT engines built on the device (not part of the signed content)

The signature covers the manifest, and the manifest covers every artifact by hash, so one signature
check plus the hash checks prove every byte the loop will run.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_gmm.errors import BundleError, ConfigError, MissingDependencyError

FORMAT = "edge-gmm-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
SIGNATURE = "manifest.json.sig"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
PRECISIONS = ("fp32", "fp16", "int8")
# numpy dtype names allowed at graph I/O (TensorRT rejects bool/int64 I/O: export lints it)
IO_DTYPES = ("float32", "float16", "int32", "int8", "uint8")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest states it."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(int(s) for s in d["shape"]), d["dtype"])

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Bundle:
    """A bundle on disk. `Bundle.open(path)` reads and checks the manifest's structure; `verify()` checks bytes."""

    def __init__(self, root: Path, manifest: dict, source: Path):
        self.root = root  # directory holding manifest.json
        self.source = source  # what the user named (directory or .tar)
        self.manifest = manifest

    # ------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        p = Path(path)
        if not p.exists():
            raise BundleError(f"{p}: no such bundle", hint="give the directory (or .tar) that `edge-gmm export --out` wrote")
        root = _extract_tar(p) if p.is_file() else p
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{mpath}: missing; {p} is not a bundle")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{mpath}: not valid JSON ({e})") from None
        check_manifest(manifest, where=str(mpath))
        return cls(root, manifest, p)

    # ------------------------------------------------------------ views
    @property
    def name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["artifacts"])

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["outputs"]]

    @property
    def sensors(self):
        from edge_gmm.config import SensorSpec, from_dict

        return [from_dict(SensorSpec, s, source=str(self.root / MANIFEST), where="sensors") for s in self.manifest["sensors"]]

    @property
    def window(self):
        from edge_gmm.config import WindowSpec, from_dict

        return from_dict(WindowSpec, self.manifest["window"], source=str(self.root / MANIFEST), where="window")

    @property
    def tasks(self):
        from edge_gmm.config import TaskSpec, from_dict

        return [from_dict(TaskSpec, t, source=str(self.root / MANIFEST), where="tasks") for t in self.manifest["tasks"]]

    @property
    def engine_dir(self) -> Path:
        """Where device-built TensorRT engines are cached: beside the bundle, never inside the signed content."""
        if self.source.is_dir():
            return self.source / "engines"
        return self.source.with_name(self.source.name + ".engines")

    def default_precision(self) -> str:
        target = self.manifest.get("target", {}).get("precision")
        return target if target in self.manifest["artifacts"] else self.precisions[0]

    def artifact_path(self, precision: str | None = None) -> Path:
        precision = precision or self.default_precision()
        arts = self.manifest["artifacts"]
        if precision not in arts:
            raise BundleError(
                f"{self.source}: no {precision} artifact; this bundle has {', '.join(arts)}",
                hint="export again with a target of that precision, or pick one listed",
            )
        return self.root / arts[precision]["file"]

    # ------------------------------------------------------------ verifying
    def verify(self, pubkey: str | Path | bytes | None = None) -> list[str]:
        """Check every artifact's sha256 (and the signature when `pubkey` is given). Returns the files checked.

        Raises BundleError naming the first file whose bytes differ from what the manifest records.
        """
        checked = []
        mbytes = (self.root / MANIFEST).read_bytes()
        sum_path = self.root / MANIFEST_SUM
        if sum_path.is_file():
            recorded = sum_path.read_text().split()[0] if sum_path.read_text().strip() else ""
            if recorded != hashlib.sha256(mbytes).hexdigest():
                raise BundleError(f"{self.root / MANIFEST}: changed since export (sha256 differs from {MANIFEST_SUM})")
        checked.append(MANIFEST)
        for precision, art in self.manifest["artifacts"].items():
            f = self.root / art["file"]
            if not f.is_file():
                raise BundleError(f"{f}: missing ({precision} artifact listed in the manifest)")
            if sha256_file(f) != art["sha256"]:
                raise BundleError(f"{f}: sha256 differs from the manifest: the file changed after export")
            checked.append(art["file"])
        for rel, digest in self.manifest.get("files", {}).items():
            f = self.root / rel
            if not f.is_file() or sha256_file(f) != digest:
                raise BundleError(f"{f}: missing or changed since export")
            checked.append(rel)
        if pubkey is not None:
            sig_path = self.root / SIGNATURE
            if not sig_path.is_file():
                raise BundleError(f"{sig_path}: missing; the bundle is not signed but a public key was given")
            key = load_public_key(pubkey)
            try:
                key.verify(sig_path.read_bytes(), mbytes)
            except Exception:  # cryptography raises InvalidSignature; any failure means "do not trust"
                raise BundleError(f"{sig_path}: signature does not match {MANIFEST} for this public key") from None
            checked.append(SIGNATURE)
        return checked

    @property
    def signed(self) -> bool:
        return (self.root / SIGNATURE).is_file()


# ---------------------------------------------------------------- structure check


def check_manifest(m: Any, *, where: str = MANIFEST) -> None:
    """The structural checks a device needs before trusting any field (the JSON Schema says the same, more)."""

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise BundleError(f"{where}: {what}")

    need(isinstance(m, dict), "top level must be an object")
    need(m.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    version = m.get("format_version")
    need(isinstance(version, int), "'format_version' must be an integer")
    if version > FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version} is newer than this edge-gmm reads ({FORMAT_VERSION})", hint="upgrade edge-gmm on this device")
    for key in ("model", "sensors", "window", "tasks", "inputs", "outputs", "artifacts"):
        need(key in m, f"missing key {key!r}")
    need(isinstance(m["artifacts"], dict) and m["artifacts"], "'artifacts' must name at least one precision")
    for precision, art in m["artifacts"].items():
        need(precision in PRECISIONS, f"artifacts: unknown precision {precision!r} (expected one of {PRECISIONS})")
        need(isinstance(art, dict) and {"file", "sha256"} <= set(art), f"artifacts.{precision}: needs 'file' and 'sha256'")
        need("/" not in art["file"] and ".." not in art["file"], f"artifacts.{precision}.file must be a plain file name")
    for side in ("inputs", "outputs"):
        need(isinstance(m[side], list) and m[side], f"'{side}' must be a non-empty list")
        for t in m[side]:
            need(isinstance(t, dict) and {"name", "shape", "dtype"} <= set(t), f"{side}: each entry needs name, shape, dtype")
            need(all(isinstance(s, int) and s > 0 for s in t["shape"]), f"{side}.{t['name']}: shapes are static positive ints")


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


# ---------------------------------------------------------------- writing (export uses this)


def write_bundle(
    out: str | Path,
    manifest: dict,
    artifacts: dict[str, Path],
    *,
    sign_key: str | Path | None = None,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write a bundle directory. `manifest` lacks hashes; `artifacts` maps precision -> ONNX file to copy in.

    Each artifact lands as `model.<precision>.onnx`; its sha256 and size are filled into manifest['artifacts'].
    """
    import shutil

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise ConfigError(f"{out}: exists and is not a bundle; refusing to overwrite", hint="choose an empty or new --out directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    m = dict(manifest)
    m["format"], m["format_version"] = FORMAT, FORMAT_VERSION
    arts = {}
    for precision, src in artifacts.items():
        name = f"model.{precision}.onnx"
        shutil.copyfile(src, out / name)
        arts[precision] = {
            **m.get("artifacts", {}).get(precision, {}),
            "file": name,
            "precision": precision,
            "format": "onnx",
            "bytes": (out / name).stat().st_size,
            "sha256": sha256_file(out / name),
        }
    m["artifacts"] = arts
    files = {}
    for rel, src in (extra_files or {}).items():
        shutil.copyfile(src, out / rel)
        files[rel] = sha256_file(out / rel)
    if files:
        m["files"] = files
    check_manifest(m, where=str(out / MANIFEST))
    mbytes = (json.dumps(m, indent=2, sort_keys=False) + "\n").encode()
    (out / MANIFEST).write_bytes(mbytes)
    (out / MANIFEST_SUM).write_text(hashlib.sha256(mbytes).hexdigest() + "  " + MANIFEST + "\n")
    if sign_key is not None:
        (out / SIGNATURE).write_bytes(load_private_key(sign_key).sign(mbytes))
    return out


def pack_tar(bundle_dir: str | Path, tar_path: str | Path) -> Path:
    """A .tar of a bundle directory (engines/ left out: they belong to one device)."""
    bundle_dir, tar_path = Path(bundle_dir), Path(tar_path)
    with tarfile.open(tar_path, "w") as tf:
        for f in sorted(bundle_dir.iterdir()):
            if f.is_file():
                tf.add(f, arcname=f.name)
    return tar_path


def _extract_tar(p: Path) -> Path:
    if not tarfile.is_tarfile(p):
        raise BundleError(f"{p}: neither a bundle directory nor a .tar")
    dest = p.with_name(p.name + ".d")
    stamp = dest / ".source-sha256"
    digest = sha256_file(p)
    if not (stamp.is_file() and stamp.read_text() == digest):
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tarfile.open(p) as tf:
            tf.extractall(dest, filter="data")  # 'data' refuses absolute paths, '..' and links out of dest
        stamp.write_text(digest)
    return dest


# ---------------------------------------------------------------- ed25519 keys


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError("bundle signatures need the 'cryptography' package", hint="pip install 'edge-gmm[device]'") from None
    return serialization, ed25519


def generate_keypair(directory: str | Path, name: str = "bundle") -> tuple[Path, Path]:
    """Write `<name>.key` (private, PEM, mode 600) and `<name>.pub` (public, PEM) into `directory`."""
    serialization, ed25519 = _crypto()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = d / f"{name}.key", d / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    priv.chmod(0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def load_private_key(path: str | Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not a readable unencrypted PEM private key ({e})", hint="make one with `edge-gmm bundle keygen`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an ed25519 key", hint="make one with `edge-gmm bundle keygen`")
    return key


def load_public_key(src: str | Path | bytes):
    serialization, ed25519 = _crypto()
    try:
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{src!s:.80}: not a readable PEM public key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{src!s:.80}: not an ed25519 public key")
    return key
