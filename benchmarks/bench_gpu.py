"""GPU benchmark: the torch runner on CUDA in fp32 and fp16 against the CPU (torch eager and ONNX Runtime),
batch 1, from one script that runs wherever a CUDA GPU exists and skips cleanly elsewhere.

    python benchmarks/bench_gpu.py [--run RUN_DIR] [--preset student-small] [--iters 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import md_table, publish  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="training run directory (default: a quick untrained-weights run; latency does not depend on weights)")
    p.add_argument("--preset", default="student-small")
    p.add_argument("--modalities", default="imu,audio,camera,env")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--cpu-rows-only", action="store_true", help=argparse.SUPPRESS)  # exercise the script without a GPU
    args = p.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.cpu_rows_only:
        print("bench_gpu: no CUDA GPU visible to torch here: skipped (run it on a machine with a GPU)")
        return 0
    from benchmarks.bench_runtime import quick_run

    from edge_gmm.export.pipeline import export_run
    from edge_gmm.export.targets import load_target
    from edge_gmm.runtime.bench import bench_runner
    from edge_gmm.runtime.runners import create_runner

    torch.set_num_threads(1)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cuda (absent)"
    rows = []
    reference = None  # logits of the first configuration (torch CPU fp32) on one random feed
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = Path(args.run) if args.run else quick_run(tmp, 1, args.preset, args.modalities.split(","))
        result = export_run(run, target=load_target("cpu-onnx-fp32"), out=tmp / "bundle", log=lambda m: print(m, file=sys.stderr))
        configs = [
            ("torch", "fp32", {"device": "cpu", "threads": 1, "run_dir": run}, "CPU 1 thread"),
            ("onnxrt", "fp32", {"threads": 1}, "CPU 1 thread"),
            ("torch", "fp32", {"device": "cuda", "run_dir": run}, gpu),
            ("torch", "fp16", {"device": "cuda", "run_dir": run}, gpu),
            ("onnxrt", "fp32", {"provider": "cuda"}, gpu),
        ]
        for name, precision, opts, where in configs:
            row = {"runner": name, "precision": precision, "device": where}
            try:
                with create_runner(name, result.bundle, precision=precision, **opts) as r:
                    lat = bench_runner(r, iters=args.iters, warmup=30, max_s=20)
                    row.update(median_ms=lat.median_ms, p99_ms=lat.p99_ms)
                    logits = r.infer(probe(r))["logits_state"]
                    reference = logits if reference is None else reference
                    row["max abs diff vs torch CPU"] = float(abs(logits - reference).max())
            except Exception as e:  # report each configuration, keep going (e.g. no CUDA provider in this onnxruntime)
                row["note"] = str(e).splitlines()[0][:80]
            rows.append(row)
    cpu = next(r["median_ms"] for r in rows if r["runner"] == "torch" and r["device"].startswith("CPU") and "median_ms" in r)
    for r in rows:
        if "median_ms" in r:
            r["speedup vs torch CPU"] = f"{cpu / r['median_ms']:.2f}x"
    table = md_table(rows, ["runner", "precision", "device", "median_ms", "p99_ms", "speedup vs torch CPU", "max abs diff vs torch CPU", "note"])
    m = result.manifest["model"]
    notes = (f"{m['preset']} ({m['parameters']:,} parameters, {m['flops'] / 1e6:.1f} MFLOP/window), batch 1, "
             f"torch {torch.__version__}, GPU {gpu}. GPU timings include the host->device copies and the copy back (which waits for the kernels).")
    publish("gpu", "GPU: torch CUDA fp32/fp16 vs CPU (batch 1)", "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:]),
            table, notes, write=not args.no_publish)
    return 0


def probe(runner):
    """One fixed random feed (all modalities present) to compare outputs across devices and precisions."""
    import numpy as np

    rng = np.random.default_rng(0)
    feed = {t.name: rng.uniform(-1, 1, t.shape).astype(t.dtype) for t in runner.inputs}
    feed["mask"][:] = 1
    return feed


if __name__ == "__main__":
    sys.exit(main())
