"""`edge-gmm demo`: the README's main-job command (see edge_gmm/demo.py for the steps)."""

from __future__ import annotations

import sys

from edge_gmm.cli.common import add_json, emit, progress


def configure(p) -> None:
    p.add_argument("--out", default="demo-out", help="folder for every artifact (default: demo-out)")
    p.add_argument("--mqtt", default="embedded",
                   help="broker URL (mqtt://host:1883, mqtts://...) or 'embedded' for an in-process broker (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sessions-per-class", type=int, default=20, help="dataset size (default 20 sessions per class)")
    p.add_argument("--session-seconds", type=float, default=10.0, help="seconds per recorded session (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the training defaults)")
    p.add_argument("--states", default="normal,bearing_wear,electrical_fault",
                   help="machine states the virtual MCU plays, in order (comma-separated)")
    p.add_argument("--seconds-per-state", type=float, default=10.0, help="live seconds per state (default 10)")
    p.add_argument("--rate", type=float, default=4.0, metavar="HZ",
                   help="streaming predictions per second in the live part (default 4; the window hop gives 2)")
    p.add_argument("--max-accuracy-drop", type=float, help="override the targets' INT8 accuracy gate (points)")
    p.add_argument("--min-agreement", type=float, help="override the targets' INT8 top-1 agreement gate (0..1)")
    p.add_argument("--fresh", action="store_true", help="redo every step even when its output exists in --out")
    add_json(p)


def run(args) -> int:
    from edge_gmm.demo import DemoOptions, run_demo, summary_text
    from edge_gmm.errors import ConfigError

    if not 0 < args.rate < float("inf"):  # checked before minutes of training, not after
        raise ConfigError(f"--rate must be a positive number of predictions per second, got {args.rate!r}")

    opts = DemoOptions(out=args.out, mqtt=args.mqtt, seed=args.seed, sessions_per_class=args.sessions_per_class,
                       session_seconds=args.session_seconds, epochs=args.epochs,
                       states=[s for s in args.states.split(",") if s], seconds_per_state=args.seconds_per_state,
                       rate=args.rate, max_accuracy_drop=args.max_accuracy_drop, min_agreement=args.min_agreement, fresh=args.fresh)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    summary = run_demo(opts, log=log, progress=None if args.json else progress)
    emit(args, summary, summary_text(summary))
    return 0
