"""`edge-gmm doctor --bundle B`: on the device, prove the engine is the model that was validated.

Reports the platform (L4T/JetPack, TensorRT, CUDA, power mode, free memory), builds or loads the engine through
the runner `run` would use, runs the bundle's golden windows through it, compares with the FP32 references
(runtime/doctor.py: top-1 agreement per head, max error, against the precision's bound) and times it.
Exit 0: the engine agrees (or the bundle has no golden windows: said so) · 2: it disagrees, or a user error ·
75: the runner failed on this device (CUDA, TensorRT, memory). `deploy` runs it before it switches.

examples:
  edge-gmm doctor --bundle ~/edge-gmm/current
  edge-gmm doctor --bundle bundle/ --runner onnxrt --json
"""

from __future__ import annotations

import contextlib
import time

from edge_gmm.cli.common import add_json, emit


def configure(p) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory or .tar")
    p.add_argument("--runner", default="auto", choices=["auto", "onnxrt", "tensorrt"],
                   help="auto = TensorRT where importable, else ONNX Runtime (what `run` picks)")
    p.add_argument("--precision", help="fp32 | fp16 | int8 (default: the bundle's target precision)")
    p.add_argument("--threads", type=int, default=0, help="onnxrt intra-op threads (0 = its default)")
    p.add_argument("--pubkey", help="verify the bundle's signature with this key (default: the device's trusted key)")
    p.add_argument("--runs", type=int, default=100, help="timed inferences (default 100)")
    add_json(p)


def run(args) -> int:
    from edge_gmm.devices import hostinfo
    from edge_gmm.errors import ConfigError, EdgeGmmError, RuntimeFailure
    from edge_gmm.runtime.bundle import Bundle
    from edge_gmm.runtime.doctor import EngineMismatch, render_report
    from edge_gmm.runtime.golden import load_golden

    if args.runs < 1:
        raise ConfigError(f"--runs {args.runs}: must be at least 1")
    bundle = Bundle.open(args.bundle)
    bundle.verify_trusted(args.pubkey)  # the golden file is hashed like the model: checked here
    report = {"bundle": str(bundle.source), "model": {"name": bundle.name, "version": str(bundle.manifest["model"].get("version", ""))},
              "platform": hostinfo.collect(), "result": "running"}
    golden = load_golden(bundle)
    try:
        _check(args, bundle, golden, report)
    except EdgeGmmError as e:  # the report still says what this machine is; the exit code stays the error's
        report.update(result="runtime-failure" if isinstance(e, RuntimeFailure) else "refused",
                      error=str(e).split("\n  hint:")[0])
        emit(args, report, render_report(report))
        raise
    emit(args, report, render_report(report))
    if report["result"] == "mismatch":
        failures = report["golden"]["failures"] + [f"streaming split: {f}" for f in report.get("stream", {}).get("failures", [])]
        raise EngineMismatch(f"this engine is not the model you validated: {'; '.join(failures)}",
                             hint="rebuild the engine (edge-gmm engine build --rebuild), try --precision fp32, or re-export; "
                             "do not deploy it as it is")
    return 0


def _check(args, bundle, golden, report: dict) -> None:
    """Open the runner, compare the golden windows, time it; fills `report` in place."""
    from edge_gmm.devices.job import open_runner
    from edge_gmm.errors import EdgeGmmError, RuntimeFailure
    from edge_gmm.runtime.doctor import check_engine, time_engine

    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        name, runner = open_runner(bundle, args.runner, args.precision, args.threads, stack)  # builds a TensorRT engine if needed
        report["runner"] = {**runner.describe(), "runner": name, "open_s": round(time.perf_counter() - t0, 3)}
        try:
            verdict = check_engine(runner, golden, bundle.manifest) if golden is not None else None
            report["latency"] = time_engine(runner, golden.feeds if golden else [runner.zeros_feed()], args.runs)
        except EdgeGmmError:
            raise
        except Exception as e:  # the feeds are the bundle's own and checked: a failure here is the device's
            raise RuntimeFailure(f"{name} runner: inference failed: {type(e).__name__}: {e}") from e
        stream = _check_stream(args, bundle, golden, name, stack) if golden is not None else None
    report["golden"] = verdict
    if stream is not None:
        report["stream"] = stream
    ok = verdict is not None and verdict["ok"] and (stream is None or stream["ok"])
    report["result"] = "no-golden" if verdict is None else ("pass" if ok else "mismatch")


def _check_stream(args, bundle, golden, name: str, stack) -> dict | None:
    """The streaming split, where `run` would stream with it: the golden windows through the encoder graphs and
    the fusion graph on this runner, judged like the whole graph (None where the split does not run here)."""
    from edge_gmm.devices.job import STREAM_RUNNERS, open_stream, split_lacks
    from edge_gmm.errors import EdgeGmmError, RuntimeFailure
    from edge_gmm.runtime.doctor import check_stream

    precision = args.precision or None
    if bundle.stream is None or name not in STREAM_RUNNERS:
        return None
    if split_lacks(bundle, precision):
        return None  # `run` falls back to whole windows for this precision
    _, graphs = open_stream(bundle, name, precision, args.threads, stack)
    try:
        return check_stream(graphs, golden, bundle.manifest)
    except EdgeGmmError:
        raise
    except Exception as e:
        raise RuntimeFailure(f"{name} runner: streaming graphs failed: {type(e).__name__}: {e}") from e
