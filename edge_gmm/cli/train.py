"""edge-gmm train: train the teacher, then distill the student, into a run directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edge_gmm.cli.common import add_json, emit, progress, table


def configure(p) -> None:
    p.add_argument("--dataset", help="dataset directory (overrides 'dataset:' in the config)")
    p.add_argument("--config", help="YAML/TOML/JSON FusionConfig; without it, defaults derived from the dataset")
    p.add_argument("--out", required=True, help="run directory to write (checkpoints, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--epochs", type=int, help="teacher epochs (overrides train.epochs; default: from a step budget "
                   "that fits the dataset, with early stopping)")
    p.add_argument("--student-epochs", type=int, help="student epochs (overrides train.student_epochs)")
    p.add_argument("--time-budget", help="cap teacher + student training time, e.g. 90s, 5m, 1h (overrides "
                   "train.time_budget_s): the plan shrinks to fit after the first epoch")
    p.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (overrides train.threads)")
    p.add_argument("--preset", help="teacher preset (overrides model.preset)")
    p.add_argument("--student", help="student preset (overrides model.student)")
    add_json(p)


def run(args) -> int:
    from edge_gmm.train.budget import parse_duration
    from edge_gmm.train.run import resolve_config, train_run

    budget = parse_duration(args.time_budget) if args.time_budget else None
    cfg, ds = resolve_config(
        args.dataset, args.config,
        **{"train.epochs": args.epochs, "train.student_epochs": args.student_epochs, "train.seed": args.seed,
           "train.threads": args.threads, "model.preset": args.preset, "model.student": args.student,
           "train.time_budget_s": budget},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks and writes the log
    with open(out / "train.log", "a") if main_rank else open(os.devnull, "w") as logfile:

        def log(line: str) -> None:
            if main_rank:
                print(line, file=sys.stderr)
            logfile.write(line + "\n")
            logfile.flush()

        metrics = train_run(cfg, ds, out, resume=args.resume, progress=progress if main_rank else None, log=log)
    if not main_rank:
        return 0
    rows = [{"model": r, "preset": metrics[r]["preset"], "params": metrics[r]["parameters"],
             "MFLOP": round(metrics[r]["flops"]["total"] / 1e6, 1), "val_acc": round(metrics[r]["val_acc"], 4),
             "epochs": len(metrics[r]["history"]), "seconds": metrics[r]["seconds"]} for r in ("teacher", "student")]
    summary = {"run": str(out), "teacher": rows[0], "student": rows[1], "seconds_total": metrics["seconds_total"]}
    emit(args, summary, table(rows) + f"\n\nrun written to {out} in {metrics['seconds_total']:.0f} s; "
         f"next: edge-gmm evaluate {out}")
    return 0
