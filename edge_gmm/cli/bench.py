"""`edge-gmm bench BUNDLE`: latency (median, p99) per runner x precision x threads at batch 1, and achieved
FLOP/s against this machine's measured matmul peak."""

from __future__ import annotations

import sys

from edge_gmm.cli.common import add_json, emit, table

COLUMNS = ["runner", "precision", "threads", "median_ms", "p99_ms", "gflops", "peak_pct", "iters", "status"]


def configure(p) -> None:
    p.add_argument("bundle", help="bundle directory or .tar")
    p.add_argument("--runners", default="onnxrt,torch,tensorrt", help="comma list of onnxrt, torch, tensorrt (absent engines are reported as skipped)")
    p.add_argument("--precisions", default="", help="comma list (default: every artifact in the bundle)")
    p.add_argument("--threads", default="1,2", help="comma list of intra-op thread counts (default: 1,2)")
    p.add_argument("--iters", type=int, default=200, help="timed calls per row (default 200)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="stop a row after this long (default 10)")
    p.add_argument("--run", dest="run_dir", help="training run directory for the torch runner (default: the one recorded in the bundle)")
    p.add_argument("--device", default="cpu", help="torch runner device: cpu or cuda")
    add_json(p)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def run(args) -> int:
    from edge_gmm.errors import ConfigError
    from edge_gmm.runtime.bench import bench_bundle

    try:
        threads = [int(t) for t in _csv(args.threads)]
    except ValueError:
        raise ConfigError(f"--threads expects a comma list of integers, got {args.threads!r}") from None
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    rows = bench_bundle(args.bundle, runners=_csv(args.runners), precisions=_csv(args.precisions) or None, threads=threads,
                        iters=args.iters, max_s=args.max_seconds, run_dir=args.run_dir, device=args.device, log=log)
    emit(args, {"bundle": args.bundle, "rows": rows}, table(rows, COLUMNS))
    return 0
