"""The engine proves itself: run a bundle's golden windows through an active runner and compare with FP32.

`check_engine(runner, golden, manifest)` returns the verdict (agreement, error, bounds, failures);
`time_engine(runner, feeds, runs)` the latency. `edge-gmm doctor` (cli/doctor.py) and `deploy`, before it
switches `current`, are the callers. No torch, no onnx: this runs on the device.

Bounds. Top-1 agreement per classification head must reach the export target's `min_top1_agreement` (the gate
the export passed), less one window of slack: a few dozen windows cannot resolve 99 %. The error, per output
max |engine - fp32| / max(1, max |fp32|) (the parity gate's scale), must stay under ERROR_BOUND of the engine's
precision, or twice what the shipped artifact itself scored at export, whichever is larger.
"""

from __future__ import annotations

import time

import numpy as np

from edge_gmm.errors import EdgeGmmError
from edge_gmm.runtime.golden import Golden, relative_error

# TensorRT's FP32 engines may use TF32 matmuls (its default on Ampere and newer, ~1e-3); FP16 keeps ~3 digits;
# INT8 is as close as its calibration made it (the export's own INT8 error usually decides, via export_error)
ERROR_BOUND = {"fp32": 1e-2, "fp16": 5e-2, "int8": 0.25}
DEFAULT_MIN_AGREEMENT = 0.99  # config.ExportTarget's default, for manifests whose target does not say


def error_bound(precision: str, export_error: dict) -> float:
    measured = export_error.get(precision)
    floor = ERROR_BOUND.get(precision, ERROR_BOUND["int8"])
    return max(floor, 2.0 * float(measured)) if isinstance(measured, (int, float)) else floor


def agreement_bound(manifest: dict, windows: int) -> float:
    target = manifest.get("target", {}).get("min_top1_agreement", DEFAULT_MIN_AGREEMENT)
    return max(0.0, float(target) - 1.0 / max(1, windows))


def run_golden(runner, golden: Golden) -> dict:
    """The runner's outputs for every golden feed, stacked like the references: name -> (feeds, *shape)."""
    got = {}
    for feed in golden.feeds:
        for name, value in runner.infer(feed).items():
            got.setdefault(name, []).append(np.asarray(value))
    return {name: np.stack(v) for name, v in got.items()}


def run_split_golden(graphs, golden: Golden) -> dict:
    """The streaming split's outputs (runtime/stream.py StreamGraphs, active) for every golden feed: each window
    through its encoder calls, then the fusion graph; stacked like the references: name -> (feeds, *shape)."""
    got = {}
    for feed in golden.feeds:
        rows = [graphs.window({m: feed[m][b] for m in graphs.modalities}, feed["mask"][b]) for b in range(len(feed["mask"]))]
        for name in rows[0]:
            got.setdefault(name, []).append(np.concatenate([np.asarray(r[name]) for r in rows]))
    return {name: np.stack(v) for name, v in got.items()}


def check_engine(runner, golden: Golden, manifest: dict) -> dict:
    """The verdict on `runner` (active) against `golden`: {'ok', 'agreement', 'max_error', bounds, 'failures'}."""
    return judge(run_golden(runner, golden), golden, manifest, runner.precision, golden.export_error)


def check_stream(graphs, golden: Golden, manifest: dict) -> dict:
    """The same verdict on the streaming split (encoder graphs + fusion graph, what `run` streams with), against
    the same FP32 references; its error bound from what the split itself scored on them at export."""
    return judge(run_split_golden(graphs, golden), golden, manifest, graphs.fusion.precision, golden.stream_error)


def judge(got: dict, golden: Golden, manifest: dict, precision: str, export_error: dict) -> dict:
    missing = [n for n in golden.references if n not in got]
    if missing:
        return {"ok": False, "failures": [f"the engine does not produce {missing}"], "windows": golden.windows}
    errors = relative_error(got, golden.references)
    bound = error_bound(precision, export_error)
    min_agree = agreement_bound(manifest, golden.windows)
    agree = {}
    for task in manifest.get("tasks", []):
        name = f"logits_{task.get('name')}"
        if task.get("type") == "classification" and name in got:
            a = got[name].reshape(-1, got[name].shape[-1]).argmax(-1)  # (feeds * batch,)
            b = golden.references[name].reshape(-1, golden.references[name].shape[-1]).argmax(-1)
            agree[task["name"]] = float((a == b).mean())
    failures = [f"task {t!r}: top-1 agreement with fp32 {100 * a:.1f}% < {100 * min_agree:.1f}%"
                for t, a in agree.items() if a < min_agree]
    failures += [f"output {n!r}: error {e:.3g} > {bound:.3g} (max |engine - fp32| / max(1, |fp32|))"
                 for n, e in errors.items() if not e <= bound]  # `not <=` also fails NaN
    return {"ok": not failures, "windows": golden.windows, "feeds": len(golden.feeds), "agreement": agree,
            "min_agreement": min_agree, "max_error": errors, "error_bound": bound, "failures": failures}


def time_engine(runner, feeds: list, runs: int) -> dict:
    """p50/p99/mean latency in ms over `runs` inferences cycling through `feeds` (the runner is warm)."""
    times = []
    for i in range(max(1, runs)):
        feed = feeds[i % len(feeds)]
        t0 = time.perf_counter()
        runner.infer(feed, check=False)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"runs": len(times), "p50_ms": round(float(np.percentile(t, 50)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3), "mean_ms": round(float(t.mean()), 3)}


class EngineMismatch(EdgeGmmError):
    """The engine on this device does not compute what the exported model computed on its golden windows."""


def render_report(r: dict) -> str:
    """The doctor report as text (what `edge-gmm doctor` prints, and `deploy` when the check fails)."""
    p = r.get("platform", {})
    plat = ", ".join(f"{k} {v}" for k, v in (("L4T", p.get("l4t")), ("JetPack", p.get("jetpack")),
                                              ("TensorRT", p.get("tensorrt")), ("CUDA", p.get("cuda")),
                                              ("onnxruntime", p.get("onnxruntime"))) if v)
    lines = [f"bundle:   {r.get('bundle')} ({r.get('model', {}).get('name')} {r.get('model', {}).get('version')})",
             f"platform: {p.get('machine')}, Python {p.get('python')}" + (f", {plat}" if plat else "")
             + f"; power mode {p.get('power_mode') or 'n/a'}; {p.get('mem_available_mb')} MiB available"]
    run = r.get("runner")
    if run:
        lines.append(f"runner:   {run.get('runner')} {run.get('precision')}, opened in {run.get('open_s')} s")
    g = r.get("golden")
    if g is None:
        lines.append("golden:   none in this bundle (exported before golden windows): the engine's numbers are not checked")
    elif "agreement" in g:
        agree = ", ".join(f"{t} {100 * a:.1f}%" for t, a in g["agreement"].items()) or "no classification head"
        err = max(g["max_error"].values()) if g["max_error"] else 0.0
        lines.append(f"golden:   {g['windows']} windows: top-1 agreement {agree} (need >= {100 * g['min_agreement']:.1f}%); "
                     f"max error {err:.3g} (bound {g['error_bound']:.3g})")
    st = r.get("stream")
    if st and "agreement" in st:
        agree = ", ".join(f"{t} {100 * a:.1f}%" for t, a in st["agreement"].items()) or "no classification head"
        err = max(st["max_error"].values()) if st["max_error"] else 0.0
        lines.append(f"stream:   the same windows through the encoder graphs + fusion graph: top-1 agreement {agree}; "
                     f"max error {err:.3g} (bound {st['error_bound']:.3g})")
    lat = r.get("latency")
    if lat:
        lines.append(f"latency:  p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms over {lat['runs']} runs")
    lines += [f"  - {f}" for f in (g or {}).get("failures", [])]
    lines += [f"  - streaming split: {f}" for f in (st or {}).get("failures", [])]
    if r.get("error"):
        lines.append(f"error:    {r['error']}")
    lines.append(f"result:   {r.get('result')}")
    return "\n".join(lines)
