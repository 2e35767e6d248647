"""edge-gmm tune: try a few training settings within a time budget, keep the best by validation accuracy.

examples:
  edge-gmm tune --dataset datasets/gunpoint --budget 10m --out tune/
  edge-gmm tune --dataset datasets/kws --budget 30m --max-latency-ms 2 --out tune/
  edge-gmm train --config tune/best.yaml --out runs/kws       # train the winner in full
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_gmm.cli.common import add_json, emit, table


def configure(p) -> None:
    p.add_argument("--dataset", help="dataset directory (overrides 'dataset:' in the config)")
    p.add_argument("--config", help="a FusionConfig to start from (default: the defaults derived from the dataset)")
    p.add_argument("--budget", required=True, help="total time for all trials, e.g. 10m, 1h")
    p.add_argument("--max-latency-ms", type=float, default=0.0,
                   help="drop students slower than this per window (torch eager, batch 1, one thread)")
    p.add_argument("--out", required=True, help="folder for the trials, trials.json and the winning best.yaml")
    add_json(p)


def run(args) -> int:
    from edge_gmm.train.budget import parse_duration
    from edge_gmm.train.tune import tune

    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    res = tune(args.dataset, args.config, Path(args.out), parse_duration(args.budget), args.max_latency_ms, log=log)
    rows = [t.row() for t in res.trials]
    summary = {"best": res.best.row(), "config": str(res.config_path), "trials": rows}
    emit(args, summary, table(rows, ["trial", "student_val_acc", "teacher_val_acc", "latency_ms", "seconds", "eligible"])
         + f"\n\nbest: {res.best.row()['trial']}; config written to {res.config_path}\n"
         f"next: edge-gmm train --config {res.config_path} --out RUN")
    return 0
