"""`edge-gmm demo`: the whole job end to end on embedded defaults, every artifact in one folder.

synthesize the machine-health dataset -> train teacher + distill student -> evaluate (report + plots) ->
export an FP32 + INT8 bundle for the CPU target and the Jetson target's ONNX + TensorRT lint -> start a
broker (embedded, or --mqtt URL) and a subscriber -> for a few machine states: a virtual MCU streams the
IMU and slow series over a real pty while audio and camera are replayed, and the device loop (ONNX Runtime)
publishes fused predictions -> a summary with accuracy per precision, latency and predictions received.

Workstation code (it trains): imports torch through edge_gmm.train.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_gmm.errors import DeviceError

DEVICE_ID = "demo-machine"
SERIAL_MODALITIES = ("imu", "env")  # what the virtual MCU streams; the rest is replayed


@dataclass
class DemoOptions:
    out: str = "demo-out"
    mqtt: str = "embedded"
    seed: int = 0
    sessions_per_class: int = 20  # 20 x 10 s: enough sessions per class that the model cannot memorize sessions
    session_seconds: float = 10.0
    epochs: int | None = None  # None = the training defaults
    states: list[str] = field(default_factory=lambda: ["normal", "bearing_wear", "electrical_fault"])
    seconds_per_state: float = 10.0
    cpu_target: str = "cpu-onnx-int8"
    jetson_target: str = "jetson-orin-nano-int8"
    precision: str = "int8"  # what the device loop runs
    rate: float | None = 4.0  # streaming predictions per second (the window hop alone would give 2); None = per hop
    max_accuracy_drop: float | None = None  # None = the targets' INT8 gates
    min_agreement: float | None = None
    fresh: bool = False  # redo steps whose outputs already exist


class Steps:
    """Numbered steps with wall time, printed as they go."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.total, self.log, self.n = total, log, 0
        self.times: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def __call__(self, name: str):
        self.n += 1
        self.log(f"\n[{self.n}/{self.total}] {name}")
        return _StepTimer(self, name)


class _StepTimer:
    def __init__(self, steps: Steps, name: str):
        self.steps, self.name = steps, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        self.steps.times[self.name] = round(dt, 1)
        if exc[0] is None:
            self.steps.log(f"    done in {dt:.1f} s")
        return False


def run_demo(opts: DemoOptions, *, log: Callable[[str], None] = print, progress=None) -> dict[str, Any]:
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(6, log)
    summary: dict[str, Any] = {"out": str(out)}

    with steps("dataset: synthesize the machine-health scenario (IMU 200 Hz, audio 16 kHz, camera 5 fps, env 10 Hz)"):
        ds = _dataset(opts, out / "machine-health", progress, log)
        summary["dataset"] = {"path": str(ds.path), "sessions": {s: len(ds.session_ids(s)) for s in ds.splits}}

    with steps("train: teacher, then distill the student"):
        run_dir = out / "run"
        summary["train"] = _train(opts, ds, run_dir, progress, log)

    with steps("evaluate: accuracy, F1, modality ablation, report with plots"):
        summary["evaluate"] = _evaluate(run_dir, log)

    with steps(f"export: {opts.cpu_target} bundle (FP32 + INT8), {opts.jetson_target} ONNX + TensorRT lint"):
        summary["export"] = _export(opts, run_dir, out, log)

    with steps("device: virtual MCU on a pty + replayed audio/camera -> device loop -> MQTT -> subscriber"):
        summary["live"] = _live(opts, out, ds, log)

    with steps("report"):
        summary["times_s"] = dict(steps.times)
        summary["total_s"] = round(time.perf_counter() - steps.t0, 1)
        _write_report(out, summary)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["times_s"] = dict(steps.times)
    return summary


# ---------------------------------------------------------------- steps


def _dataset(opts: DemoOptions, path: Path, progress, log):
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.synth import synthesize

    if (path / "manifest.json").exists() and not opts.fresh:
        log(f"    reusing {path}")
        return Dataset.open(path)
    return synthesize("machine-health", path, seed=opts.seed, sessions_per_class=opts.sessions_per_class,
                      session_seconds=opts.session_seconds, overwrite=True, progress=progress)


def _train(opts: DemoOptions, ds, run_dir: Path, progress, log) -> dict:
    from edge_gmm.train.run import resolve_config, train_run

    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists() and (run_dir / "student.safetensors").exists() and not opts.fresh:
        log(f"    reusing {run_dir}")
        metrics = json.loads(metrics_file.read_text())
    else:
        if opts.fresh and run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        cfg, ds = resolve_config(dataset=str(ds.path), **{"train.epochs": opts.epochs, "train.seed": opts.seed})
        metrics = train_run(cfg, ds, run_dir, progress=progress, log=lambda m: log(f"    {m}"))
    return {r: {k: metrics.get(r, {}).get(k) for k in ("val_acc", "epochs", "seconds")} for r in ("teacher", "student")}


def _evaluate(run_dir: Path, log) -> dict:
    from edge_gmm.train.checkpoint import load_run
    from edge_gmm.train.evaluate import evaluate_run, write_outputs

    run = load_run(run_dir)
    result = evaluate_run(run, split="test")
    report = write_outputs(run, result)
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2, default=str))
    rows = {}
    for role in ("teacher", "student"):
        r = result.get(role)
        if r:
            rows[role] = {"accuracy": r.get("accuracy"), "macro_f1": r.get("macro_f1"), "parameters": r.get("parameters"),
                          "gflops": r["flops"]["total"] / 1e9, "cpu_latency_ms": r.get("cpu_latency_ms"),
                          "best_single_modality": _best_single(r.get("ablation", {}))}
            log(f"    {role:8s} test accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
                f"{r['parameters'] / 1e3:.0f} k params  {r['flops']['total'] / 1e6:.1f} MFLOP")
    log(f"    report: {report}")
    return {**rows, "report": str(report)}


def _best_single(ablation: dict) -> dict | None:
    """The best single modality of an ablation table ({'alone': {modality: accuracy}, 'without': ...})."""
    alone = ablation.get("alone") or {}
    if not alone:
        return None
    name = max(alone, key=alone.get)
    return {"name": name, "accuracy": alone[name]}


def _export(opts: DemoOptions, run_dir: Path, out: Path, log) -> dict:
    from edge_gmm.export.pipeline import export_run
    from edge_gmm.export.targets import load_target

    result = {}
    for key, target_name in (("cpu", opts.cpu_target), ("jetson", opts.jetson_target)):
        bundle_dir = out / f"bundle-{target_name}"
        manifest_file = bundle_dir / "manifest.json"
        if manifest_file.exists() and not opts.fresh:
            log(f"    reusing {bundle_dir}")
            manifest = json.loads(manifest_file.read_text())
        else:
            target = load_target(target_name)
            if opts.max_accuracy_drop is not None:
                target.max_accuracy_drop = opts.max_accuracy_drop
            if opts.min_agreement is not None:
                target.min_top1_agreement = opts.min_agreement
            res = export_run(run_dir, target=target, out=bundle_dir, log=lambda m: log(f"    {m}"))
            manifest = res.manifest
        lint = manifest.get("lint", {})
        result[key] = {
            "bundle": str(bundle_dir), "target": target_name,
            "metrics": manifest.get("metrics", {}),
            "lint_ok": lint.get("ok"), "lint_nodes": sum(lint.get("ops", {}).values()) if lint else None,
        }
        log(f"    {target_name}: {bundle_dir.name}  precisions {', '.join(manifest.get('metrics', {}))}  "
            f"TensorRT lint {'ok' if lint.get('ok') else 'FAILED'}")
    return result


# ---------------------------------------------------------------- live part


def _live(opts: DemoOptions, out: Path, ds, log) -> dict:
    from edge_gmm.devices.job import RunSettings, run_device
    from edge_gmm.mqtt.subscriber import Subscriber
    from edge_gmm.mqtt.url import parse_mqtt_url

    bundle = out / f"bundle-{opts.cpu_target}"
    broker = None
    if opts.mqtt == "embedded":
        from edge_gmm.mqtt.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        url = broker.url
        log(f"    embedded MQTT broker on {url}")
    else:
        url = opts.mqtt
    truth: dict[str, str] = {}
    hits = {"right": 0, "scored": 0}
    lock = threading.Lock()

    def show(payload: dict, verdict: str) -> None:
        task, res = next(iter(payload.get("tasks", {}).items()), (None, {}))
        label = res.get("label")
        with lock:
            expected = truth.get("label")
            if label is not None and expected is not None:
                hits["scored"] += 1
                hits["right"] += int(label == expected)
        states = " ".join(f"{m}:{s}" for m, s in payload.get("sensors", {}).items())
        lat = payload.get("latency_ms", {}).get("total", 0.0)
        mark = "" if verdict == "ok" else f"  [{verdict}]"
        log(f"    seq {payload.get('seq', '?'):>4}  {task}={label or '-':<17} {res.get('score', 0):.2f}  "
            f"{states}  {lat:5.1f} ms  (truth {expected}){mark}")

    spool = out / "spool"
    runs = []
    sub = Subscriber(parse_mqtt_url(url), DEVICE_ID, on_prediction=show)
    try:
        sub.start(wait_s=10)
        for label in opts.states:
            sid = _test_session(ds, label)
            with lock:
                truth["label"] = label
            log(f"  -- machine state '{label}' (test session {sid}): {opts.seconds_per_state:g} s live")
            link = out / "tty-mcu"
            with _virtual_mcu(ds.path, sid, link, opts.seconds_per_state + 5, out / "mcu.log"):
                sources = out / "sources.yaml"
                sources.write_text(_sources_yaml(link, ds.path, sid, bundle))
                settings = RunSettings(bundle=str(bundle), sources=str(sources), mqtt=url, device_id=DEVICE_ID,
                                       max_seconds=opts.seconds_per_state, runner="onnxrt", precision=opts.precision,
                                       spool_dir=str(spool), metrics_every_s=5.0, rate=opts.rate)
                runs.append(run_device(settings))
        published = sum(r.get("predictions", 0) for r in runs)
        sub.wait(published, timeout=15)
        stats = sub.stats()
    finally:
        sub.stop()
        if broker is not None:
            broker.stop()
    received = stats.get("received", 0)
    live_acc = hits["right"] / hits["scored"] if hits["scored"] else None
    log(f"    received {received} of {published} predictions (gaps {stats.get('gaps', 0)}, "
        f"duplicates {stats.get('duplicates', 0)})")
    return {"published": published, "received": received, "gaps": stats.get("gaps", 0),
            "duplicates": stats.get("duplicates", 0), "live_accuracy": live_acc, "runs": runs,
            "broker": url}


def _test_session(ds, label: str) -> str:
    """A held-out session of machine state `label` (test split first)."""
    for split in ("test", "val", "train"):
        for sid in ds.session_ids(split) if split in ds.splits else []:
            if ds.load_session(sid).labels.get("state") == label:
                return sid
    raise DeviceError(f"{ds.path}: no session in state {label!r}")


def _sources_yaml(link: Path, dataset: Path, sid: str, bundle: Path) -> str:
    from edge_gmm.runtime.bundle import Bundle

    names = [s.name for s in Bundle.open(bundle).sensors]
    lines = []
    for m in names:
        if m in SERIAL_MODALITIES:
            lines.append(f"{m}: serial://{link}")
        else:
            lines.append(f"{m}: replay://{dataset}?session={sid}")
    return "\n".join(lines) + "\n"


class _virtual_mcu:
    """`edge-gmm bridge emulate` in its own process, as a real MCU would be; waits for its pty link."""

    def __init__(self, dataset: Path, sid: str, link: Path, seconds: float, logfile: Path):
        self.cmd = [sys.executable, "-m", "edge_gmm.cli.main", "bridge", "emulate", "--pty", "--link", str(link),
                    "--dataset", str(dataset), "--session", sid, "--seconds", f"{seconds:g}"]
        self.link, self.logfile = link, logfile

    def __enter__(self):
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        while not self.link.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise DeviceError(f"the virtual MCU did not come up; see {self.logfile}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return False


# ---------------------------------------------------------------- report


def _pct(v) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else "-"


def summary_text(s: dict) -> str:
    ev, ex, live = s.get("evaluate", {}), s.get("export", {}), s.get("live", {})
    lines = ["", "== edge-gmm demo summary", f"output folder: {s['out']}"]
    for role in ("teacher", "student"):
        r = ev.get(role)
        if r:
            best = r.get("best_single_modality") or {}
            lines.append(f"{role:8s} test accuracy {_pct(r['accuracy'])}, macro-F1 {_pct(r['macro_f1'])}, "
                         f"{r['parameters'] / 1e3:.0f} k params, {r['gflops'] * 1e3:.1f} MFLOP/window"
                         + (f", best single modality {best.get('name')} {_pct(best.get('accuracy'))}" if best else ""))
    cpu = ex.get("cpu", {})
    for prec, m in cpu.get("metrics", {}).items():
        acc = next(iter((m.get("accuracy") or {}).values()), None)  # percent, primary task
        agree = next(iter((m.get("top1_agreement") or {}).values()), None)  # fraction
        line = f"bundle {prec:5s} validation accuracy " + (f"{acc:.1f} %" if acc is not None else "-")
        lines.append(line + (f", top-1 agreement with fp32 {_pct(agree)}" if agree is not None else ""))
    jet = ex.get("jetson", {})
    if jet:
        lines.append(f"{jet['target']}: TensorRT lint {'ok' if jet.get('lint_ok') else 'FAILED'} ({jet.get('lint_nodes')} nodes)")
    if live:
        inf = [r["latency_ms"]["infer"]["p50"] for r in live.get("runs", []) if "infer" in r.get("latency_ms", {})]
        lines.append(f"received {live['received']} of {live['published']} predictions over MQTT "
                     f"(gaps {live['gaps']}, duplicates {live['duplicates']}); live accuracy {_pct(live.get('live_accuracy'))}"
                     + (f"; inference median {min(inf):.2f} ms" if inf else ""))
        stream = stream_line(live.get("runs", []))
        if stream:
            lines.append(stream)
        states = {}
        for r in live.get("runs", []):
            for m, st in (r.get("sensors") or {}).items():
                states[m] = st
        if states:
            lines.append("sensor states at the end: " + ", ".join(f"{m} {st}" for m, st in states.items()))
    if "times_s" in s:
        lines.append("wall time: " + ", ".join(f"{k.split(':')[0]} {v:.0f} s" for k, v in s["times_s"].items())
                     + (f"; total {s['total_s']:.0f} s" if "total_s" in s else ""))
    return "\n".join(lines)


def stream_line(runs: list[dict]) -> str:
    """Prediction rate and per-stage cost over the live runs that streamed (their summaries' `stream`)."""
    runs = [r for r in runs if (r.get("stream") or {}).get("mode") == "stream" and r.get("uptime_s")]
    if not runs:
        return ""
    rate = sum(r["predictions"] for r in runs) / sum(r["uptime_s"] for r in runs)
    enc: dict[str, float] = {}
    for r in runs:
        for m, ms in r["stream"].get("encode_ms_per_s", {}).items():
            enc[m] = enc.get(m, 0.0) + ms / len(runs)
    fusion = [r["stream"]["fusion_ms"]["p50"] for r in runs if r["stream"].get("fusion_ms")]
    return (f"streaming: {rate:.1f} predictions/s (set {runs[0]['stream']['rate_hz']:g}/s); encoders "
            f"{sum(enc.values()):.2f} ms per second of sensor data ("
            + ", ".join(f"{m} {v:.2f}" for m, v in enc.items())
            + f"), fusion {statistics.median(fusion) if fusion else 0.0:.2f} ms per prediction (median)")


def _write_report(out: Path, s: dict) -> None:
    ev = s.get("evaluate", {})
    report = Path(ev.get("report", ""))
    rel = os.path.relpath(report, out) if report.name else ""
    body = ["# edge-gmm demo", "", "```", summary_text(s).strip(), "```", ""]
    if rel:
        plots = report.parent / "plots"
        body += [f"Training and evaluation report: [{rel}]({rel})", ""]
        for png in sorted(plots.glob("*.png")) if plots.exists() else []:
            body.append(f"![{png.stem}]({os.path.relpath(png, out)})")
        body.append("")
    body += ["Artifacts: `dataset/`, `run/`, `bundle-*/`, `sources.yaml`, `spool/`, `summary.json`, `mcu.log`.", ""]
    (out / "report.md").write_text("\n".join(body))
