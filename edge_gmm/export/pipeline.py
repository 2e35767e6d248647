"""`edge-gmm export`: student -> FP32 ONNX -> parity -> FP16/INT8 -> accuracy gates -> TensorRT lint ->
the streaming split (encoders + fusion, the same gates: export/stream_export.py) -> bundle.

    export_model(model, target=..., out=..., calib_windows=..., eval_windows=...)   any GMM-contract model
    export_run(run_dir, target=..., out=...)                                         a training run directory

Both replace a bundle already at `out`; the CLI calls `check_out` first, which refuses that without --force.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_gmm.config import ExportTarget, to_dict
from edge_gmm.errors import ConfigError, DataError
from edge_gmm.export import evaluate as ev
from edge_gmm.export.gates import ExportGateError, check_parity, check_quantized
from edge_gmm.export.lint import lint_onnx
from edge_gmm.runtime.bundle import MANIFEST, TensorSpec, write_bundle
from edge_gmm.runtime.golden import GOLDEN_FILE, GOLDEN_WINDOWS

PARITY_WINDOWS = 64  # torch-vs-ONNX parity on this many evaluation windows
PROBE_WINDOWS = 16  # windows for the per-layer INT8 error probe


def check_out(out: str | Path, *, force: bool = False, tar: bool = False) -> None:
    """Refuse, before minutes of training or export, to replace a bundle at `out` (or its .tar) without
    `force`, and to replace anything that is not a bundle even with it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory", hint="choose a new --out directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise ConfigError(f"{out}: exists and is not a bundle; refusing to replace it", hint="choose an empty or new --out directory")
        if not force:
            raise ConfigError(f"{out}: a bundle is already there", hint="pass --force to replace it, or choose another --out")
    archive = Path(str(out).rstrip("/") + ".tar")
    if tar and archive.exists() and not force:
        raise ConfigError(f"{archive}: already exists", hint="pass --force to replace it, or choose another --out")


@dataclass
class ExportResult:
    bundle: Path
    manifest: dict
    timings: dict[str, float] = field(default_factory=dict)

    def summary_rows(self) -> list[dict]:
        rows = []
        for precision, art in self.manifest["artifacts"].items():
            met = self.manifest["metrics"].get(precision, {})
            acc = met.get("accuracy", {})
            agree = met.get("top1_agreement", {})
            rows.append({
                "precision": precision,
                "accuracy %": ", ".join(f"{k} {v:.2f}" for k, v in acc.items()) or "-",
                "agreement %": ", ".join(f"{100 * v:.2f}" for v in agree.values()) or "-",
                "size KiB": round(art["bytes"] / 1024, 1),
            })
        return rows


def _even_subset(windows, n: int):
    """`n` windows spread evenly over the set (calibration should see every session, not the first few)."""
    total = ev.n_windows(windows)
    if n <= 0 or n >= total:
        return windows
    idx = np.linspace(0, total - 1, n).round().astype(int)
    return _Subset(windows, idx)


class _Subset:
    def __init__(self, w, idx):
        self.inputs = {k: v[idx] for k, v in w.inputs.items()}
        self.mask = w.mask[idx]
        self.labels = {k: np.asarray(v)[idx] for k, v in getattr(w, "labels", {}).items()}


def torch_outputs(model, windows, modalities: list[str], limit: int, chunk: int = 64) -> dict[str, np.ndarray]:
    import torch

    total = min(limit, ev.n_windows(windows))
    outs: dict[str, list] = {}
    model.eval()
    with torch.no_grad():
        for s in range(0, total, chunk):
            inputs = {m: torch.from_numpy(np.ascontiguousarray(windows.inputs[m][s : min(s + chunk, total)], dtype=np.float32)) for m in modalities}
            mask = torch.from_numpy(np.ascontiguousarray(windows.mask[s : min(s + chunk, total)], dtype=np.float32))
            for k, v in model(inputs, mask).items():
                outs.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def write_golden(tmp: Path, fp32: Path, artifacts: dict, windows, modalities: list[str], batch: int,
                 inputs: list[dict], outputs: list[dict]) -> tuple[dict, Path]:
    """golden.npz (runtime/golden.py): GOLDEN_WINDOWS evaluation windows, spread evenly, with the FP32 ONNX's
    outputs; and the manifest's `golden` entry, recording each shipped artifact's error on them here."""
    from edge_gmm.runtime.golden import encode_golden, relative_error

    subset = _even_subset(windows, GOLDEN_WINDOWS)
    feeds = list(ev.iter_feeds(subset, modalities, batch))
    refs = _feed_outputs(fp32, feeds)
    errors = {p: max(relative_error(_feed_outputs(path, feeds), refs).values()) for p, path in artifacts.items()}
    path = tmp / GOLDEN_FILE
    path.write_bytes(encode_golden(feeds, refs, [TensorSpec.from_dict(t) for t in inputs],
                                   [TensorSpec.from_dict(t) for t in outputs]))
    entry = {"file": GOLDEN_FILE, "windows": ev.n_windows(subset), "feeds": len(feeds), "reference": "fp32",
             "source": "evaluation windows, spread evenly", "export_error": errors}
    return entry, path


def _feed_outputs(path: Path, feeds: list[dict]) -> dict[str, np.ndarray]:
    """Every output of the ONNX at `path` for each feed: name -> (feeds, *shape)."""
    sess = ev.session(path)
    names = [o.name for o in sess.get_outputs()]
    rows = [sess.run(names, feed) for feed in feeds]
    return {n: np.stack([r[i] for r in rows]) for i, n in enumerate(names)}


def _io_specs(onnx_path: Path) -> tuple[list[dict], list[dict]]:
    import onnx
    from onnx import helper

    m = onnx.load(str(onnx_path), load_external_data=False)

    def spec(vi):
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        return TensorSpec(vi.name, tuple(d.dim_value for d in tt.shape.dim), dtype).to_dict()

    return [spec(v) for v in m.graph.input], [spec(v) for v in m.graph.output]


def _model_info(model, target: ExportTarget) -> dict:
    info = {"name": getattr(model, "preset_name", type(model).__name__)}
    try:
        from edge_gmm.model import flops, parameters

        info["parameters"] = int(parameters(model))
        info["flops"] = int(flops(model, batch=target.batch)["total"])
    except Exception:  # a model outside the GMM family may not support FLOP counting; the bench then omits FLOP/s
        info["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return info


def export_model(
    model,
    *,
    target: ExportTarget,
    out: str | Path,
    calib_windows,
    eval_windows,
    quantizer: str = "ort",
    sign_key: str | Path | None = None,
    model_name: str = "",
    run_dir: str | Path | None = None,
    log=lambda msg: None,
) -> ExportResult:
    """Export, check and bundle `model` for `target`. Raises ExportGateError when a gate fails (nothing written)."""
    import onnx

    from edge_gmm.export.fp16 import convert_to_fp16
    from edge_gmm.export.quantize import quantize
    from edge_gmm.model.onnx_export import export_onnx

    if target.precision == "int8":
        from edge_gmm.export.quantize import ensure_available

        ensure_available(quantizer)
    if ev.n_windows(eval_windows) == 0:
        raise DataError("export: no evaluation windows; the dataset's evaluation split is empty")
    modalities = list(model.modalities)
    tasks = list(model.tasks)
    timings: dict[str, float] = {}
    metrics: dict[str, dict] = {}
    artifacts: dict[str, Path] = {}
    art_info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edge-gmm-export-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        fp32 = export_onnx(model, tmp / "fp32.onnx", batch=target.batch, opset=target.opset, target=target)
        proto = onnx.load(str(fp32))
        onnx.checker.check_model(proto, full_check=True)  # full_check runs strict shape inference too
        timings["export_s"] = time.perf_counter() - t0
        log(f"exported FP32 ONNX ({len(proto.graph.node)} nodes, opset {target.opset}) in {timings['export_s']:.1f} s")

        # parity: the ONNX must compute what torch computes, on real windows
        ref = torch_outputs(model, eval_windows, modalities, PARITY_WINDOWS)
        got = ev.run_onnx(fp32, eval_windows, modalities, target.batch, PARITY_WINDOWS)
        diffs = ev.max_abs_diff(got, ref)
        check_parity(diffs, {k: float(np.abs(v).max()) for k, v in ref.items()}, target.parity_atol)
        log(f"parity vs torch on {min(PARITY_WINDOWS, ev.n_windows(eval_windows))} windows: max |diff| " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))

        t0 = time.perf_counter()
        out32 = ev.run_onnx(fp32, eval_windows, modalities, target.batch)
        labels = getattr(eval_windows, "labels", {})
        metrics["fp32"] = {"accuracy": ev.accuracy(out32, labels, tasks), "windows": ev.n_windows(eval_windows),
                           "max_abs_diff_vs_torch": max(diffs.values())}
        logmel_nodes = [n.name for n in proto.graph.node if any(p in n.name for p in target.fp32_layers)]
        artifacts["fp32"], art_info["fp32"] = fp32, {"fp32_nodes": logmel_nodes}  # TensorRT pins these to FP32
        timings["eval_fp32_s"] = time.perf_counter() - t0

        if target.precision == "fp16":
            half = tmp / "fp16.onnx"
            onnx.save(convert_to_fp16(proto, target.fp32_layers), str(half))
            out16 = ev.run_onnx(half, eval_windows, modalities, target.batch)
            acc16 = ev.accuracy(out16, labels, tasks)
            agree16 = ev.agreement(out16, out32, tasks)
            metrics["fp16"] = {"accuracy": acc16, "top1_agreement": agree16, "max_abs_diff_vs_fp32": max(ev.max_abs_diff(out16, out32).values())}
            check_quantized("fp16", metrics["fp32"]["accuracy"], acc16, agree16, target.max_accuracy_drop, target.min_top1_agreement)
            artifacts["fp16"], art_info["fp16"] = half, {"fp32_nodes": logmel_nodes}
            log(f"fp16: accuracy {acc16}, agreement {agree16}")

        if target.precision == "int8":
            t0 = time.perf_counter()
            calib = _even_subset(calib_windows, target.calibration_windows)
            int8 = tmp / "int8.onnx"
            qinfo = quantize(quantizer, fp32, int8, lambda: ev.iter_feeds(calib, modalities, target.batch), target.fp32_layers)
            qinfo["calibration_windows"] = ev.n_windows(calib)
            timings["quantize_s"] = time.perf_counter() - t0
            out8 = ev.run_onnx(int8, eval_windows, modalities, target.batch)
            acc8 = ev.accuracy(out8, labels, tasks)
            agree8 = ev.agreement(out8, out32, tasks)
            metrics["int8"] = {"accuracy": acc8, "top1_agreement": agree8}
            try:
                check_quantized("int8", metrics["fp32"]["accuracy"], acc8, agree8, target.max_accuracy_drop, target.min_top1_agreement)
            except ExportGateError:
                worst = ev.layer_errors(fp32, int8, eval_windows, modalities, target.batch, PROBE_WINDOWS)
                check_quantized("int8", metrics["fp32"]["accuracy"], acc8, agree8, target.max_accuracy_drop, target.min_top1_agreement, worst)
            artifacts["int8"], art_info["int8"] = int8, qinfo
            log(f"int8 ({quantizer}, {qinfo['calibration_windows']} calibration windows): accuracy {acc8}, agreement {agree8}")

        # TensorRT parses the FP32 graph for fp32/fp16 engines and the QDQ graph for int8 (runtime/runners/trt_plan.py)
        lint_src = artifacts["int8"] if target.precision == "int8" else (artifacts["fp16"] if target.runtime == "onnxruntime" and target.precision == "fp16" else fp32)
        lint = lint_onnx(lint_src, target)
        log(f"lint ({target.name}): {lint.summary()}")
        if not lint.ok and target.runtime == "tensorrt":
            first = lint.issues[0]
            raise ExportGateError(f"TensorRT lint: node {first['node']!r} ({first['op']}): {first['problem']}"
                                  + (f" (+{len(lint.issues) - 1} more)" if len(lint.issues) > 1 else ""),
                                  hint=f"target {target.name} (TensorRT {target.tensorrt_version}) cannot parse this graph")

        stream, stream_files = _stream(model, tmp, target, calib_windows, eval_windows, quantizer, out32, timings, log)
        inputs, outputs = _io_specs(fp32)
        info = _model_info(model, target)
        created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        from edge_gmm import __version__

        manifest = {
            "model": {
                "name": model_name or info["name"],
                "version": created.replace(":", "").replace("-", "")[:15],
                "preset": getattr(model, "preset_name", ""),
                "created": created,
                "edge_gmm_version": __version__,
                **{k: v for k, v in info.items() if k != "name"},
                **({"run_dir": str(Path(run_dir).resolve())} if run_dir else {}),
            },
            "sensors": to_dict(list(model.sensors)),
            "modalities": modalities,
            "window": to_dict(model.window),
            "tasks": to_dict(tasks),
            "normalization": {"in_graph": True, "note": "raw model-layout inputs; per-channel statistics are inside the graph"},
            "inputs": inputs,
            "outputs": outputs,
            "artifacts": art_info,
            "metrics": metrics,
            "parity": {"windows": min(PARITY_WINDOWS, ev.n_windows(eval_windows)), "max_abs_diff": diffs, "atol": target.parity_atol},
            "lint": lint.to_dict(),
            "target": to_dict(target),
            **({"stream": stream} if stream else {}),
        }
        manifest["golden"], golden_path = write_golden(tmp, fp32, artifacts, eval_windows, modalities, target.batch, inputs, outputs)
        if stream:
            from edge_gmm.export.stream_export import golden_errors

            manifest["golden"]["stream_error"] = golden_errors(tmp, model, stream, stream_files, golden_path, inputs, outputs)
        bundle = write_bundle(out, manifest, artifacts, sign_key=sign_key, extra_files={GOLDEN_FILE: golden_path},
                              stream_artifacts=stream_files)
    import json

    return ExportResult(bundle, json.loads((bundle / "manifest.json").read_text()), timings)


def _stream(model, tmp: Path, target: ExportTarget, calib_windows, eval_windows, quantizer: str, out32: dict,
            timings: dict, log) -> tuple[dict | None, dict | None]:
    """The streaming split (export/stream_export.py), once the whole-window graph has passed its gates; a
    model outside the GMM family (no `stream_layout`) ships the whole-window graph alone."""
    if not hasattr(model, "stream_layout"):
        log(f"stream: {type(model).__name__} has no stream_layout(); the bundle gets the whole-window graph only")
        return None, None
    from edge_gmm.export.stream_export import export_stream

    t0 = time.perf_counter()
    section, files = export_stream(model, tmp, target=target, calib_windows=calib_windows, eval_windows=eval_windows,
                                   quantizer=quantizer, reference=out32, log=log)
    timings["stream_s"] = time.perf_counter() - t0
    log(f"stream: encoders + fusion checked in {timings['stream_s']:.1f} s")
    return section, files


def export_run(run_dir: str | Path, *, target: ExportTarget, out: str | Path, quantizer: str = "ort",
               sign_key: str | Path | None = None, eval_split: str = "", log=lambda msg: None) -> ExportResult:
    """Export the student of a training run, with windows from the run's dataset."""
    from edge_gmm.train.checkpoint import load_run

    run = load_run(run_dir)
    calib, evalw = run_windows(run, eval_split)
    return export_model(run.student, target=target, out=out, calib_windows=calib, eval_windows=evalw, quantizer=quantizer,
                        sign_key=sign_key, model_name=_run_name(run, run_dir), run_dir=run_dir, log=log)


def run_windows(run, eval_split: str = ""):
    """(calibration windows from 'train', evaluation windows from 'val' or else 'test') of a run's dataset."""
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.windowing import make_windows

    ds = Dataset.open(run.dataset)
    splits = [s for s in ds.splits if ds.splits[s]]
    split = eval_split or next((s for s in ("val", "test") if s in splits), "")
    if not split:
        raise DataError(f"{run.dataset}: no 'val' or 'test' split to evaluate the export on (splits: {', '.join(splits)})")
    if "train" not in splits:
        raise DataError(f"{run.dataset}: no 'train' split to calibrate INT8 on")
    modalities = [s.name for s in run.sensors]
    tasks = [t.name for t in run.tasks]
    calib = make_windows(ds, "train", run.window, modalities=modalities, tasks=tasks)
    evalw = make_windows(ds, split, run.window, modalities=modalities, tasks=tasks)
    return calib, evalw


def _run_name(run, run_dir) -> str:
    name = getattr(run, "name", "") or ""
    if not name:
        cfg = getattr(run, "config", None)
        name = Path(str(getattr(cfg, "dataset", "") or run_dir)).name
    return f"{name}-student" if name else "gmm-student"
