"""edge-gmm evaluate: teacher vs student on a split, modality ablation, report.md with plots."""

from __future__ import annotations

from edge_gmm.cli.common import add_json, emit, progress, table


def configure(p) -> None:
    p.add_argument("run", help="run directory written by 'edge-gmm train'")
    p.add_argument("--dataset", help="evaluate on this dataset instead of the one the run trained on")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    add_json(p)


def run(args) -> int:
    from edge_gmm.train.checkpoint import load_run
    from edge_gmm.train.evaluate import evaluate_run, write_outputs

    r = load_run(args.run)
    result = evaluate_run(r, args.dataset, args.split, latency=not args.no_latency, progress=progress)
    report = write_outputs(r, result)
    result["report"] = str(report)
    rows = []
    for role in ("teacher", "student"):
        if role in result:
            e = result[role]
            rows.append({"model": role, "preset": e["preset"], "params": e["parameters"],
                         "MFLOP": round(e["flops"]["total"] / 1e6, 1), "accuracy": e.get("accuracy", float("nan")),
                         "macro_f1": e.get("macro_f1", float("nan")), "latency_ms": e.get("cpu_latency_ms", "")})
    emit(args, result, table(rows) + f"\n\n{result['windows']} windows of split {args.split!r}; report: {report}")
    return 0
