"""Golden windows: validation feeds and the FP32 ONNX's outputs for them, carried in the bundle (golden.npz).

Export writes them; `edge-gmm doctor` (and `deploy`, before it switches) runs them through the device's engine
and compares. The file is one of the manifest's `files`, so its sha256 (and the signature) covers it; the
manifest's `golden` entry names it and records what the shipped artifacts scored on it at export.

    golden.npz   input_<i>:  (feeds, *inputs[i].shape)   one full feed per row, in manifest input order
                 output_<j>: (feeds, *outputs[j].shape)  the FP32 ONNX's outputs for those feeds
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from edge_gmm.errors import BundleError

GOLDEN_FILE = "golden.npz"
GOLDEN_WINDOWS = 32  # a few dozen: enough to catch a wrong engine, small enough to ship (KiBs for sensor models)


@dataclass
class Golden:
    feeds: list  # [{input name: array of the manifest shape}]
    references: dict  # output name -> (feeds, *shape), from the FP32 ONNX
    windows: int  # distinct windows behind the feeds (the tail feed may repeat its last window)
    export_error: dict = field(default_factory=dict)  # precision -> that artifact's error on these feeds at export
    stream_error: dict = field(default_factory=dict)  # precision -> the streaming split's error on them at export


def encode_golden(feeds: list, references: dict, inputs: list, outputs: list) -> bytes:
    """The bytes of golden.npz (compressed: real windows compress well). `inputs`/`outputs` are TensorSpecs."""
    arrays = {f"input_{i}": np.stack([f[t.name] for f in feeds]).astype(t.dtype) for i, t in enumerate(inputs)}
    arrays.update({f"output_{j}": np.asarray(references[t.name], dtype=np.float32) for j, t in enumerate(outputs)})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def relative_error(got: dict, ref: dict) -> dict:
    """Per output: max |got - ref| / max(1, max |ref|), the scale export's parity gate uses (gates.check_parity)."""
    out = {}
    for name, r in ref.items():
        r64 = np.asarray(r, dtype=np.float64)
        diff = np.abs(np.asarray(got[name], dtype=np.float64) - r64)
        out[name] = float(diff.max() / max(1.0, float(np.abs(r64).max()))) if diff.size else 0.0
    return out


def load_golden(bundle) -> Golden | None:
    """The bundle's golden windows, or None when it has none (exported before they existed).

    Call after `bundle.verify...()`: the file's hash is checked there. Shapes are checked here, against the manifest.
    """
    entry = bundle.manifest.get("golden")
    if entry is None:
        return None
    where = f"{bundle.root / 'manifest.json'}: golden"
    if not isinstance(entry, dict) or entry.get("file") not in bundle.manifest.get("files", {}):
        raise BundleError(f"{where}: must name a file listed (and hashed) in the manifest's files")
    path = bundle.root / entry["file"]
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not a readable golden-window file ({e})") from None
    inputs, outputs = bundle.inputs, bundle.outputs
    feeds_n = _check_arrays(arrays, inputs, outputs, path)
    feeds = [{t.name: arrays[f"input_{i}"][k] for i, t in enumerate(inputs)} for k in range(feeds_n)]
    refs = {t.name: arrays[f"output_{j}"] for j, t in enumerate(outputs)}
    windows = entry.get("windows", feeds_n)
    errors, stream = entry.get("export_error", {}), entry.get("stream_error", {})
    return Golden(feeds, refs, int(windows) if isinstance(windows, int) else feeds_n,
                  errors if isinstance(errors, dict) else {}, stream if isinstance(stream, dict) else {})


def _check_arrays(arrays: dict, inputs: list, outputs: list, path) -> int:
    """The number of feeds, after checking every array against the manifest's I/O (a mismatch is a BundleError)."""
    n = None
    for prefix, specs in (("input", inputs), ("output", outputs)):
        for i, t in enumerate(specs):
            a = arrays.get(f"{prefix}_{i}")
            if a is None:
                raise BundleError(f"{path}: no {prefix}_{i} (for {t.name!r})")
            want_dtype = np.dtype(t.dtype) if prefix == "input" else np.dtype(np.float32)
            if a.ndim != len(t.shape) + 1 or tuple(a.shape[1:]) != t.shape or a.dtype != want_dtype:
                raise BundleError(f"{path}: {prefix}_{i} is {a.dtype} {a.shape}; {t.name!r} needs {want_dtype} (N, {', '.join(map(str, t.shape))})")
            if n is not None and a.shape[0] != n:
                raise BundleError(f"{path}: {prefix}_{i} has {a.shape[0]} feeds, the others {n}")
            n = a.shape[0]
    if not n:
        raise BundleError(f"{path}: holds no golden feeds")
    return n


def attach_golden(bundle_dir, feeds: list, references: dict, *, sign_key=None, export_error: dict | None = None,
                  source: str = "given feeds") -> None:
    """Write golden.npz into a bundle directory and re-write its manifest to list, hash and (with `sign_key`)
    sign it. Export does this itself (export/pipeline.py); this is for bundles written by other means."""
    from edge_gmm.runtime.bundle import Bundle, sha256_file, write_manifest

    bundle = Bundle.open(bundle_dir)
    if not bundle.source.is_dir():
        raise BundleError(f"{bundle_dir}: golden windows are added to a bundle directory, not a .tar")
    path = bundle.root / GOLDEN_FILE
    path.write_bytes(encode_golden(feeds, references, bundle.inputs, bundle.outputs))
    batch = bundle.inputs[0].shape[0]
    m = dict(bundle.manifest)
    m["files"] = {**m.get("files", {}), GOLDEN_FILE: sha256_file(path)}
    m["golden"] = {"file": GOLDEN_FILE, "windows": len(feeds) * batch, "feeds": len(feeds), "reference": "fp32",
                   "source": source, "export_error": dict(export_error or {})}
    write_manifest(bundle.root, m, sign_key=sign_key)
