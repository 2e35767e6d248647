"""`edge-gmm train-and-export --config C --target T --out BUNDLE`: the whole desktop job in one command.

train teacher + distill student (library call) -> export/quantize/gate/lint -> bundle -> quick latency ->
summary table (accuracy per precision, size, latency, lint).
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_gmm.cli.common import add_json, emit, progress, table
from edge_gmm.cli.export import add_export_options, load_target_with_overrides


def configure(p) -> None:
    p.add_argument("--config", required=True, help="fusion config (YAML/TOML): dataset, modalities, window, model, train")
    add_export_options(p)
    p.add_argument("--run", dest="run_dir", help="where the training run goes (default: OUT.run beside the bundle)")
    p.add_argument("--dataset", help="override the config's dataset")
    p.add_argument("--epochs", type=int, help="override train.epochs (default: from a step budget that fits the dataset)")
    p.add_argument("--time-budget", help="cap training time, e.g. 90s, 5m, 1h (overrides train.time_budget_s)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    p.add_argument("--bench-iters", type=int, default=200, help="timed calls per precision for the summary latency (0 = skip)")
    add_json(p)


def run(args) -> int:
    from edge_gmm.export.pipeline import check_out, export_run
    from edge_gmm.train.run import resolve_config, train_run

    target = load_target_with_overrides(args)  # fail on a bad target or --out before training for minutes
    check_out(args.out, force=args.force, tar=args.tar)
    out = Path(args.out)
    run_dir = Path(args.run_dir) if args.run_dir else out.with_name(out.name.rstrip("/") + ".run")
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    from edge_gmm.train.budget import parse_duration

    budget = parse_duration(args.time_budget) if args.time_budget else None
    cfg, ds = resolve_config(dataset=args.dataset, config=args.config,
                             **{"train.epochs": args.epochs, "train.time_budget_s": budget})
    log(f"== train: {cfg.model.preset} teacher -> {cfg.model.student} student, run in {run_dir}")
    train_metrics = train_run(cfg, ds, run_dir, resume=args.resume, progress=None if args.json else progress, log=log)
    log(f"== export: target {target.name}")
    result = export_run(run_dir, target=target, out=out, quantizer=args.quantizer, sign_key=args.sign_key,
                        eval_split=args.eval_split, log=log)
    latency = {}
    if args.bench_iters > 0:
        from edge_gmm.runtime.bench import bench_bundle

        log("== latency (onnxrt, 1 thread, batch 1)")
        for row in bench_bundle(result.bundle, runners=("onnxrt",), threads=(1,), iters=args.bench_iters, max_s=5.0):
            latency[row["precision"]] = row
    rows = result.summary_rows()
    for r in rows:
        lat = latency.get(r["precision"], {})
        r["median ms"] = lat.get("median_ms", "")
        r["p99 ms"] = lat.get("p99_ms", "")
    lint = result.manifest["lint"]
    text = "\n".join([
        f"bundle: {result.bundle}   run: {run_dir}   target: {target.name}",
        f"teacher val acc {train_metrics.get('teacher', {}).get('val_acc', float('nan')):.4f}, "
        f"student val acc {train_metrics.get('student', {}).get('val_acc', float('nan')):.4f}",
        table(rows, ["precision", "accuracy %", "agreement %", "size KiB", "median ms", "p99 ms"]),
        f"TensorRT lint ({target.name}): {'ok' if lint['ok'] else 'FAIL: ' + lint['issues'][0]['problem']}"
        f" - {sum(lint['ops'].values())} nodes, opset {lint['opset']}",
        f"next: edge-gmm bundle verify {result.bundle}   |   edge-gmm deploy {result.bundle} --host USER@DEVICE",
    ])
    if args.tar:
        from edge_gmm.runtime.bundle import pack_tar

        pack_tar(result.bundle, str(result.bundle).rstrip("/") + ".tar")
    emit(args, {"bundle": str(result.bundle), "run": str(run_dir), "summary": rows, "lint": lint,
                "train": {k: train_metrics.get(k, {}).get("val_acc") for k in ("teacher", "student")}}, text)
    return 0
