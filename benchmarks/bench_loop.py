"""The on-device loop's speed: overhead around inference, replay throughput, and (opt-in) a memory soak.

    python benchmarks/bench_loop.py                      # short: ~1 min incl. building a student bundle
    python benchmarks/bench_loop.py --bundle bundle/     # a trained bundle instead of an untrained student
    python benchmarks/bench_loop.py --soak 600 --mqtt mqtt://127.0.0.1:1883   # the 10-minute soak target

Rows:
- `overhead`: replay paced so inference keeps up (--speed, default 10x: 20 windows/s); the loop's
  per-window overhead = end-to-end (chunk arrival → prediction handed to the publisher) minus inference.
  Target p99 <= 2 ms.
- `throughput`: replay --speed max through the student on ONE core (process pinned, ORT 1 thread).
  Target >= 50 windows/s.
- `soak` (with --soak S): real time for S seconds; RSS growth after a warm-up, predictions vs acked.
  Target < 5 MB growth, 0 lost.

The default student is `student-stream` for the machine-health scenario, untrained: its compute is
what a trained one costs (the loop does not care what the weights are).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import md_table, publish  # noqa: E402


def build_student_bundle(out: Path, preset: str = "student-stream") -> Path:
    """An untrained GMM of `preset` for machine-health, exported to ONNX and written as a bundle."""
    import onnx
    import torch

    from edge_gmm.config import to_dict
    from edge_gmm.data import synth
    from edge_gmm.model.gmm import build_model
    from edge_gmm.model.onnx_export import export_onnx
    from edge_gmm.runtime.bundle import write_bundle

    sc = synth.get_scenario("machine-health")
    sensors, window, tasks = sc.sensors(), sc.window(), sc.tasks()
    torch.manual_seed(0)
    model = build_model(preset, sensors, window, tasks)
    onnx_path = export_onnx(model, out.parent / f"{preset}.onnx", batch=1)
    proto = onnx.load(str(onnx_path))

    def io(vi):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        return {"name": vi.name, "shape": dims, "dtype": "float32"}

    manifest = {
        "model": {"name": preset, "version": "untrained"},
        "sensors": to_dict(sensors), "modalities": list(model.modalities), "window": to_dict(window),
        "tasks": to_dict(tasks), "inputs": [io(v) for v in proto.graph.input], "outputs": [io(v) for v in proto.graph.output],
        "target": {"name": "cpu-onnx-fp32", "precision": "fp32", "batch": 1, "opset": 18},
    }
    return write_bundle(out, manifest, {"fp32": onnx_path})


def pin_to_one_core() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    return f"cpu {cpus[0]}"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(bundle: Path, sources: str, **kw) -> dict:
    from edge_gmm.devices.job import RunSettings, run_device

    return run_device(RunSettings(bundle=str(bundle), sources=sources, device_id="bench", threads=1, **kw))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle to run (default: build an untrained student-stream)")
    ap.add_argument("--dataset", help="dataset to replay (default: a small machine-health synth)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the overhead and throughput runs")
    ap.add_argument("--speed", type=float, default=10.0, help="replay speed of the overhead run")
    ap.add_argument("--mqtt", default="none", help="publish to this broker too (default: none)")
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of real-time soak (0 = skip)")
    ap.add_argument("--no-publish", action="store_true", help="print the table without writing docs/benchmarks.md")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    t0 = time.perf_counter()
    bundle = Path(args.bundle) if args.bundle else build_student_bundle(tmp / "bundle")
    if args.dataset:
        dataset = Path(args.dataset)
    else:
        from edge_gmm.data import synth

        dataset = tmp / "mh"
        synth.synthesize("machine-health", dataset, seed=1, sessions_per_class=1, session_seconds=12.0)
    print(f"prepared bundle and dataset in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    replay = f"replay://{dataset}?loop=1"
    common = {"mqtt": args.mqtt, "spool_dir": str(tmp / "spool")}
    core = pin_to_one_core()

    rows = []
    s = run(bundle, replay, speed=args.speed, max_seconds=args.seconds, **common)
    lat = s["latency_ms"]
    rows.append({"run": f"overhead (replay {args.speed:g}x)", "windows/s": s["predictions"] / s["uptime_s"],
                 "overhead p50 ms": lat["overhead"]["p50"], "overhead p99 ms": lat["overhead"]["p99"],
                 "infer p50 ms": lat["infer"]["p50"], "infer p99 ms": lat["infer"]["p99"],
                 "dropped": s["dropped_windows"], "predictions": s["predictions"]})
    s = run(bundle, replay, speed=float("inf"), max_seconds=args.seconds, **common)
    lat = s["latency_ms"]
    rows.append({"run": "throughput (replay max)", "windows/s": s["predictions"] / s["uptime_s"],
                 "overhead p50 ms": lat["overhead"]["p50"], "overhead p99 ms": lat["overhead"]["p99"],
                 "infer p50 ms": lat["infer"]["p50"], "infer p99 ms": lat["infer"]["p99"],
                 "dropped": s["dropped_windows"], "predictions": s["predictions"]})
    notes = [f"Model `{s['model']['name']}` ({s['model']['version']}), {s['model']['backend']} {s['model']['precision']}, "
             f"1 thread, process pinned to {core}, publishing to {args.mqtt}. Overhead = end-to-end (chunk arrival to "
             "prediction handed to the publisher, publish included) minus inference; at --speed max windows wait "
             "in the queue by design (the replay runs ahead), so that row's overhead is queueing, not loop cost."]
    if args.soak:
        warm = min(60.0, args.soak / 5)
        marks = {}

        def on_loop(loop):
            import threading

            def sample():
                time.sleep(warm)
                marks["start"] = rss_mb()

            threading.Thread(target=sample, daemon=True).start()

        from edge_gmm.devices.job import RunSettings, run_device

        s = run_device(RunSettings(bundle=str(bundle), sources=replay, device_id="bench", threads=1, speed=1.0,
                                   max_seconds=args.soak, **common), on_loop=on_loop)
        growth = rss_mb() - marks.get("start", float("nan"))
        lost = s["predictions"] - s.get("publisher", {}).get("acked", s["predictions"])
        rows.append({"run": f"soak ({args.soak:g} s real time)", "windows/s": s["predictions"] / s["uptime_s"],
                     "overhead p50 ms": s["latency_ms"]["overhead"]["p50"], "overhead p99 ms": s["latency_ms"]["overhead"]["p99"],
                     "infer p50 ms": s["latency_ms"]["infer"]["p50"], "infer p99 ms": s["latency_ms"]["infer"]["p99"],
                     "dropped": s["dropped_windows"], "predictions": s["predictions"]})
        notes.append(f"Soak: RSS growth after a {warm:g} s warm-up {growth:.2f} MB; predictions not acked by the broker: {lost}.")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    command = "python " + " ".join(["benchmarks/bench_loop.py", *sys.argv[1:]])
    table = md_table(rows)
    publish("loop", "On-device loop: overhead and replay throughput", command, table, "\n".join(notes),
            write=not args.no_publish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
