"""The deploy bundle: manifest schema, reader, verifier and writer (device side: no torch, no onnx).

A bundle is a directory (or a .tar of one) holding:

    manifest.json          everything the device needs without the training code (docs/bundle.md)
    manifest.json.sha256   sha256 of manifest.json: catches accidental corruption of the manifest itself
    manifest.json.sig      optional ed25519 signature over the manifest bytes (raw 64 bytes)
    model.<precision>.onnx the artifacts, each listed in the manifest with its sha256
    stream.<graph>.<precision>.onnx  the streaming split (optional, manifest `stream`): one encoder graph per
                           modality and one fusion graph, each listed with its sha256 (docs/bundle.md)
    golden.npz             golden windows and FP32 reference outputs (runtime/golden.py), hashed in the manifest's files
    engines/               TensorRT engines built on the device (not part of the signed content)

The signature covers the manifest, and the manifest covers every artifact by hash, so one signature
check plus the hash checks prove every byte the loop will run. Engines cannot be signed (they are built on the
device), so each one is hashed into a device-local record when built and loaded only while it matches.

Trust (docs/bundle.md, "Trust model"): a device whose HOME/trust/bundle.pub exists requires every bundle to be
signed by it (`Bundle.verify_trusted`, what `edge-gmm run` and `bundle verify` call). HOME is the release home
the bundle sits in (HOME/current, HOME/releases/R, ...), else $EDGE_GMM_HOME, else ~/edge-gmm.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
# bounds checked before anything is parsed or allocated: a real manifest is a few KiB, nested ~6 deep, and the
# largest real input (a 3x1080x1920 camera frame) is 6 Mi elements
MAX_MANIFEST_BYTES = 4 << 20
MAX_JSON_DEPTH = 32
MAX_TENSOR_ELEMENTS = 1 << 26  # 64 Mi elements: 256 MiB of float32 per graph input/output
MAX_TENSOR_RANK = 8
MAX_TENSORS = 256
# the device's trust folder: HOME/trust/bundle.pub (trusted key) and HOME/trust/engines.json (engine records)
TRUST_DIR, TRUSTED_KEY, ENGINE_RECORDS = "trust", "bundle.pub", "engines.json"
ENGINE_SUFFIXES = (".engine", ".cache")  # what the TensorRT runner loads from engine_dir (engines, timing caches)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def release_home(source: str | Path) -> Path | None:
    """HOME when `source` sits in a deploy tree: HOME/current or HOME/previous (links), HOME/releases/R, HOME/staging/R."""
    for p in (Path(source).absolute(), Path(source).resolve()):
        if p.parent.name in ("releases", "staging"):
            return p.parent.parent
        if p.name in ("current", "previous") and p.is_symlink():
            return p.parent
    return None


def device_homes(source: str | Path) -> list[Path]:
    """Where the device's trust/ folder may be, first match wins: the release home, then $EDGE_GMM_HOME (default ~/edge-gmm)."""
    env = Path(os.environ.get("EDGE_GMM_HOME") or "~/edge-gmm").expanduser().absolute()
    return list(dict.fromkeys(h for h in (release_home(source), env) if h is not None))


def trusted_key_path(source: str | Path) -> Path | None:
    """The device's trusted public key for the bundle at `source`: HOME/trust/bundle.pub of the first home that has one.

    Existence alone makes it required (a dangling link or an unreadable file fails closed, as a ConfigError)."""
    return next((k for k in (h / TRUST_DIR / TRUSTED_KEY for h in device_homes(source)) if os.path.lexists(k)), None)


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


WHOLE = "window"  # the whole-window graph's name; the streaming split's are "encoder.<modality>" and "fusion"
FUSION = "fusion"


def encoder_graph(modality: str) -> str:
    return f"encoder.{modality}"


@dataclass(frozen=True)
class Graph:
    """One ONNX graph of a bundle at every precision it was exported in: the whole-window graph, or one of the
    streaming split (manifest `stream.graphs`). What a runner needs: I/O specs and the file per precision."""

    name: str
    inputs: list
    outputs: list
    artifacts: dict
    root: Path
    source: Path

    @property
    def precisions(self) -> list[str]:
        return list(self.artifacts)

    def artifact_path(self, precision: str) -> Path:
        if precision not in self.artifacts:
            what = "" if self.name == WHOLE else f" for graph {self.name!r}"
            raise BundleError(
                f"{self.source}: no {precision} artifact{what}; this bundle has {', '.join(self.artifacts)}",
                hint="export again with a target of that precision, or pick one listed",
            )
        return self.root / self.artifacts[precision]["file"]


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
        manifest = read_manifest(mpath)
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
        return self.graph().artifact_path(precision or self.default_precision())

    # ------------------------------------------------------------ graphs (whole window, streaming split)
    @property
    def stream(self) -> dict | None:
        """The manifest's `stream` section (dim, layouts, graphs, parity, metrics), or None for a bundle
        exported without the streaming split."""
        return self.manifest.get("stream") or None

    @property
    def graph_names(self) -> list[str]:
        return [WHOLE] + list((self.stream or {}).get("graphs", {}))

    def graph(self, name: str | None = None) -> Graph:
        """A graph by name: None or WHOLE the whole-window one, else "encoder.<m>" or "fusion"."""
        if name in (None, WHOLE):
            return Graph(WHOLE, self.inputs, self.outputs, self.manifest["artifacts"], self.root, self.source)
        graphs = (self.stream or {}).get("graphs", {})
        if name not in graphs:
            have = ", ".join(graphs) if graphs else "none: it was exported without the streaming split"
            raise BundleError(f"{self.source}: no graph {name!r} (streaming graphs: {have})",
                              hint="export it again with this edge-gmm, or run with --whole-window")
        g = graphs[name]
        return Graph(name, [TensorSpec.from_dict(d) for d in g["inputs"]],
                     [TensorSpec.from_dict(d) for d in g["outputs"]], g["artifacts"], self.root, self.source)

    # ------------------------------------------------------------ verifying
    def verify(self, pubkey: str | Path | bytes | None = None, *, engines: bool = True) -> list[str]:
        """Check the signature (when `pubkey` is given), then every file the runtime loads. Returns the files checked.

        Raises BundleError naming the first file that is unsigned, changed, a link, or an engine not built here.
        """
        checked = []
        mbytes = self._regular(MANIFEST, "the manifest").read_bytes()
        sum_path = self.root / MANIFEST_SUM
        if sum_path.is_file():
            recorded = sum_path.read_text().split()[0] if sum_path.read_text().strip() else ""
            if recorded != hashlib.sha256(mbytes).hexdigest():
                raise BundleError(f"{self.root / MANIFEST}: changed since export (sha256 differs from {MANIFEST_SUM})")
        checked.append(MANIFEST)
        if pubkey is not None:  # first: an unsigned or re-signed manifest says nothing about the files it lists
            self._check_signature(mbytes, pubkey)
            checked.append(SIGNATURE)
        for precision, art in self.manifest["artifacts"].items():
            f = self._regular(art["file"], f"{precision} artifact listed in the manifest")
            if sha256_file(f) != art["sha256"]:
                raise BundleError(f"{f}: sha256 differs from the manifest: the file changed after export")
            checked.append(art["file"])
        for name, graph in (self.stream or {}).get("graphs", {}).items():
            for precision, art in graph["artifacts"].items():
                f = self._regular(art["file"], f"{precision} artifact of graph {name!r}")
                if sha256_file(f) != art["sha256"]:
                    raise BundleError(f"{f}: sha256 differs from the manifest: the file changed after export")
                checked.append(art["file"])
        for rel, digest in self.manifest.get("files", {}).items():
            if sha256_file(self._regular(rel, "listed in the manifest's files")) != digest:
                raise BundleError(f"{self.root / rel}: changed since export (sha256 differs from the manifest)")
            checked.append(rel)
        return checked + (self._verify_engines() if engines else [])

    def verify_trusted(self, pubkey: str | Path | bytes | None = None, *, engines: bool = True) -> list[str]:
        """What `edge-gmm run` and `bundle verify` check: with `pubkey`, else with this device's trusted key when
        one is installed (trusted_key_path), else hashes only."""
        return self.verify(pubkey if pubkey is not None else self.trusted_key(), engines=engines)

    def trusted_key(self) -> Path | None:
        return trusted_key_path(self.source)

    def _check_signature(self, mbytes: bytes, pubkey) -> None:
        trusted = self.trusted_key()
        whose = f"this device's trusted key {trusted}" if trusted is not None and pubkey == trusted else "the public key given"
        sig_path = self.root / SIGNATURE
        if not sig_path.is_file() or sig_path.is_symlink():
            raise BundleError(f"{sig_path}: missing; the bundle is not signed but {whose} requires a signature",
                              hint="export it with --sign-key (the private half of that key)")
        key = load_public_key(pubkey)
        try:
            key.verify(sig_path.read_bytes(), mbytes)
        except Exception:  # cryptography raises InvalidSignature; any failure means "do not trust"
            raise BundleError(f"{sig_path}: signature does not match {MANIFEST} for {whose}") from None

    def _regular(self, rel: str, what: str) -> Path:
        """root/rel, refused unless it is a regular file inside the bundle reached through no symbolic link."""
        f = self.root / rel
        if f.is_symlink() or f.resolve() != self.root.resolve().joinpath(rel):
            raise BundleError(f"{f}: a symbolic link ({what}); bundle files must be regular files inside the bundle")
        if not f.is_file():
            raise BundleError(f"{f}: missing ({what})")
        return f

    # ------------------------------------------------------------ device-built engines
    def engine_records_path(self) -> Path:
        return device_homes(self.source)[0] / TRUST_DIR / ENGINE_RECORDS

    def _engine_records(self) -> dict:
        path = self.engine_records_path()
        try:
            records = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, UnicodeDecodeError, ValueError):
            records = {}  # an unreadable record trusts nothing: every engine is rebuilt or refused
        return records if isinstance(records, dict) else {}

    def engine_trusted(self, f: Path, data: bytes | None = None) -> bool:
        """Whether `f` (its bytes `data`, when already read) is what this device recorded when it built it."""
        if f.is_symlink():
            return False
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(f)
        return self._engine_records().get(str(f.resolve())) == digest

    def record_engine(self, *files: Path) -> None:
        """Record the sha256 of engine-cache files this device just wrote (atomic replace of the record file)."""
        path = self.engine_records_path()
        records = self._engine_records()
        records.update({str(f.resolve()): sha256_file(f) for f in files if f.is_file()})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        tmp.replace(path)

    def _verify_engines(self) -> list[str]:
        if not self.engine_dir.is_dir():
            return []
        checked = []
        for f in sorted(self.engine_dir.iterdir()):
            if f.suffix in ENGINE_SUFFIXES:
                if not self.engine_trusted(f):
                    raise BundleError(
                        f"{f}: not an engine file edge-gmm built on this device (no matching record in "
                        f"{self.engine_records_path()}); a planted or changed engine is never loaded",
                        hint=f"delete it, or rebuild it: edge-gmm engine build {self.source} --rebuild",
                    )
                checked.append(f"{self.engine_dir.name}/{f.name}")
        return checked

    @property
    def signed(self) -> bool:
        return (self.root / SIGNATURE).is_file()


# ---------------------------------------------------------------- structure check


def read_manifest(mpath: Path) -> Any:
    """manifest.json parsed, with its size and nesting bounded before the JSON parser sees it."""
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{mpath}: {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        text = mpath.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{mpath}: not UTF-8 ({e})") from None
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise BundleError(f"{mpath}: nested deeper than {MAX_JSON_DEPTH} levels; not a manifest edge-gmm wrote")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e})") from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether `text` nests arrays/objects deeper than `limit` (brackets inside strings do not count)."""
    depth = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        depth += 1 if m[0] in "[{" else -1
        if depth > limit:
            return True
    return False


def safe_relpath(rel: Any) -> bool:
    """A relative path that stays inside the bundle: not absolute, no '..', no backslash or NUL."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and str(p) == rel


def check_manifest(m: Any, *, where: str = MANIFEST) -> None:
    """The structural checks a device needs before trusting any field (the JSON Schema says the same, more).

    Every field later code indexes, iterates or allocates from is type- and size-checked here, so a crafted
    manifest is a BundleError (exit 2), never a TypeError or a terabyte allocation.
    """

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise BundleError(f"{where}: {what}")

    need(isinstance(m, dict), "top level must be an object")
    need(m.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    version = m.get("format_version")
    need(isinstance(version, int) and not isinstance(version, bool), "'format_version' must be an integer")
    if version > FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version} is newer than this edge-gmm reads ({FORMAT_VERSION})", hint="upgrade edge-gmm on this device")
    for key in ("model", "sensors", "window", "tasks", "inputs", "outputs", "artifacts"):
        need(key in m, f"missing key {key!r}")
    need(isinstance(m["model"], dict) and isinstance(m["model"].get("name"), str), "'model' must be an object with a string 'name'")
    for key in ("sensors", "tasks"):
        need(isinstance(m[key], list) and all(isinstance(x, dict) for x in m[key]), f"'{key}' must be a list of objects")
    for key in ("window", "target", "normalization", "metrics", "lint", "golden"):
        need(isinstance(m.get(key, {}), dict), f"'{key}' must be an object")
    need(isinstance(m.get("modalities", []), list) and all(isinstance(x, str) for x in m.get("modalities", [])),
         "'modalities' must be a list of input names")
    _check_artifacts(m["artifacts"], "artifacts", need)
    files = m.get("files", {})
    need(isinstance(files, dict), "'files' must map relative paths to sha256")
    for rel, digest in files.items():
        need(safe_relpath(rel), f"files: {rel!r} is outside the bundle (absolute, '..' or not a plain relative path)")
        need(_is_sha256(digest), f"files.{rel}: sha256 must be 64 hex digits")
    for side in ("inputs", "outputs"):
        need(isinstance(m[side], list) and 0 < len(m[side]) <= MAX_TENSORS, f"'{side}' must be a non-empty list (at most {MAX_TENSORS})")
        for t in m[side]:
            _check_tensor(t, side, need)
    if m.get("stream") is not None:
        _check_stream(m["stream"], need)


def _check_artifacts(arts: Any, where: str, need) -> None:
    need(isinstance(arts, dict) and arts, f"'{where}' must name at least one precision")
    for precision, art in arts.items():
        need(precision in PRECISIONS, f"{where}: unknown precision {precision!r} (expected one of {PRECISIONS})")
        need(isinstance(art, dict) and {"file", "sha256"} <= set(art), f"{where}.{precision}: needs 'file' and 'sha256'")
        need(isinstance(art["file"], str) and safe_relpath(art["file"]) and "/" not in art["file"],
             f"{where}.{precision}.file must be a plain file name")
        need(_is_sha256(art["sha256"]), f"{where}.{precision}.sha256 must be 64 hex digits")


def _check_stream(st: Any, need) -> None:
    """The streaming split: dim, per-modality layouts (checked again by TokenLayout), graphs with static I/O."""
    need(isinstance(st, dict), "'stream' must be an object")
    dim = st.get("dim")
    need(isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim <= 1 << 16, "stream.dim must be a positive int")
    need(isinstance(st.get("layouts"), dict) and all(isinstance(v, dict) for v in st["layouts"].values()),
         "stream.layouts must map modalities to objects")
    graphs = st.get("graphs")
    need(isinstance(graphs, dict) and FUSION in graphs, "stream.graphs must be an object with a 'fusion' graph")
    need(len(graphs) <= MAX_TENSORS, f"stream.graphs: at most {MAX_TENSORS}")
    for name, g in graphs.items():
        need(name == FUSION or (isinstance(name, str) and name.startswith("encoder.")),
             f"stream.graphs: unknown graph {name!r} (expected 'fusion' or 'encoder.<modality>')")
        need(isinstance(g, dict), f"stream.graphs.{name} must be an object")
        for side in ("inputs", "outputs"):
            need(isinstance(g.get(side), list) and 0 < len(g[side]) <= MAX_TENSORS,
                 f"stream.graphs.{name}.{side} must be a non-empty list")
            for t in g[side]:
                _check_tensor(t, f"stream.graphs.{name}.{side}", need)
        _check_artifacts(g.get("artifacts"), f"stream.graphs.{name}.artifacts", need)


def _check_tensor(t: Any, side: str, need) -> None:
    need(isinstance(t, dict) and {"name", "shape", "dtype"} <= set(t), f"{side}: each entry needs name, shape, dtype")
    name, shape = t["name"], t["shape"]
    need(isinstance(name, str), f"{side}: names are strings")
    need(t["dtype"] in IO_DTYPES, f"{side}.{name}: dtype {t['dtype']!r} is not one of {IO_DTYPES}")
    need(isinstance(shape, list) and 0 < len(shape) <= MAX_TENSOR_RANK
         and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape),
         f"{side}.{name}: shapes are static positive ints (rank 1..{MAX_TENSOR_RANK})")
    elements = 1
    for s in shape:
        elements *= s
    need(elements <= MAX_TENSOR_ELEMENTS,
         f"{side}.{name}: shape {shape} is {elements:.3g} elements; at most {MAX_TENSOR_ELEMENTS} ({MAX_TENSOR_ELEMENTS >> 20} Mi) per tensor")


def _is_sha256(x: Any) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


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
    stream_artifacts: dict[str, dict[str, Path]] | None = None,
) -> Path:
    """Write a bundle directory. `manifest` lacks hashes; `artifacts` maps precision -> ONNX file to copy in.

    Each artifact lands as `model.<precision>.onnx`; its sha256 and size are filled into manifest['artifacts'].
    `stream_artifacts` (graph name -> precision -> ONNX file) does the same for manifest['stream']['graphs'],
    each landing as `stream.<graph>.<precision>.onnx`.
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
    arts = _copy_artifacts({p: (f"model.{p}.onnx", src) for p, src in artifacts.items()}, out, m.get("artifacts", {}))
    m["artifacts"] = arts
    if stream_artifacts:
        st = dict(m["stream"])
        st["graphs"] = {name: {**st["graphs"][name], "artifacts": _copy_artifacts(
            {p: (f"stream.{name}.{p}.onnx", src) for p, src in per.items()}, out,
            st["graphs"][name].get("artifacts", {}))} for name, per in stream_artifacts.items()}
        m["stream"] = st
    files = {}
    for rel, src in (extra_files or {}).items():
        shutil.copyfile(src, out / rel)
        files[rel] = sha256_file(out / rel)
    if files:
        m["files"] = files
    write_manifest(out, m, sign_key=sign_key)
    return out


def _copy_artifacts(files: dict[str, tuple[str, Path]], out: Path, extra: dict) -> dict:
    """precision -> (name, source) copied into `out`, as a manifest artifacts table (with `extra`'s fields)."""
    import shutil

    arts = {}
    for precision, (name, src) in files.items():
        shutil.copyfile(src, out / name)
        arts[precision] = {**extra.get(precision, {}), "file": name, "precision": precision, "format": "onnx",
                           "bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)}
    return arts


def write_manifest(out: str | Path, m: dict, *, sign_key: str | Path | None = None) -> None:
    """manifest.json, its .sha256 and (with `sign_key`) its signature; without one, a stale signature is removed."""
    out = Path(out)
    check_manifest(m, where=str(out / MANIFEST))
    mbytes = (json.dumps(m, indent=2, sort_keys=False) + "\n").encode()
    (out / MANIFEST).write_bytes(mbytes)
    (out / MANIFEST_SUM).write_text(hashlib.sha256(mbytes).hexdigest() + "  " + MANIFEST + "\n")
    if sign_key is not None:
        (out / SIGNATURE).write_bytes(load_private_key(sign_key).sign(mbytes))
    elif (out / SIGNATURE).exists():
        (out / SIGNATURE).unlink()


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
        try:
            with tarfile.open(p) as tf:
                members = tf.getmembers()
                for member in members:
                    _check_member(p, member)
                tf.extractall(dest, members=members, filter="data")  # 'data' refuses the same again, in depth
        except (tarfile.TarError, OSError) as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleError(f"{p}: not a readable bundle .tar ({e})") from None
        except BundleError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        stamp.write_text(digest)
    return dest


def _check_member(p: Path, member: tarfile.TarInfo) -> None:
    """A bundle .tar holds regular files and folders under relative names; links and devices are refused."""
    if not safe_relpath(member.name.rstrip("/")):
        raise BundleError(f"{p}: member {member.name!r} points outside the bundle (absolute or '..'); refusing the .tar")
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise BundleError(f"{p}: member {member.name!r} is a {kind}; a bundle .tar holds regular files only")


# ---------------------------------------------------------------- ed25519 keys


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError("bundle signatures need the 'cryptography' package", hint="pip install 'edge-gmm[device]'") from None
    return serialization, ed25519


def generate_keypair(directory: str | Path, name: str = "bundle", *, force: bool = False) -> tuple[Path, Path]:
    """Write `<name>.key` (private, PEM, mode 600) and `<name>.pub` (public, PEM) into `directory`.

    An existing key is never replaced without `force`: every device trusting the old public key would then
    refuse each new bundle.
    """
    serialization, ed25519 = _crypto()
    d = Path(directory)
    priv, pub = d / f"{name}.key", d / f"{name}.pub"
    existing = [str(f) for f in (priv, pub) if os.path.lexists(f)]
    if existing and not force:
        raise ConfigError(f"{' and '.join(existing)}: already exists; refusing to replace a signing key",
                          hint="devices that trust its public key would refuse new bundles; pass --force to replace it anyway, or choose another --name/--out")
    d.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
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
