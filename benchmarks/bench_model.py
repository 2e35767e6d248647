"""The model's targets (issue 3): fused accuracy, fusion gain, student vs teacher, training time,
BasicMotions (with aeon's MiniRocket side by side when aeon is installed) and av-digits.

    .venv/bin/python benchmarks/bench_model.py            # short: smaller machine-health set, fewer epochs, av-digits 20/digit
    .venv/bin/python benchmarks/bench_model.py --full     # the issue's table: default synthetic set + demo config (minutes)
    .venv/bin/python benchmarks/bench_model.py --only machine-health --full --no-publish

--basicmotions DIR reads BasicMotions_TRAIN.ts / _TEST.ts from DIR (default: the copy inside the aeon package).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report import md_table, publish  # noqa: E402

DEMO_CONFIG = REPO / "examples" / "machine-health.yaml"
# BasicMotions has 40 training cases: small batches, more epochs; 0.5 s patches give 20 tokens per 10 s series
BASICMOTIONS_TRAIN = {"train.epochs": 60, "train.student_epochs": 60, "train.batch_size": 8, "train.patience": 60,
                      "train.lr": 1e-3, "model.patch_s": 0.5, "model.modality_dropout": 0.0}


def _train_eval(cfg, ds, out: Path, latency: bool = True) -> tuple[dict, dict]:
    from edge_gmm.train.checkpoint import load_run
    from edge_gmm.train.evaluate import evaluate_run, write_outputs
    from edge_gmm.train.run import train_run

    metrics = train_run(cfg, ds, out, log=lambda line: print("   ", line, flush=True))
    run = load_run(out)
    result = evaluate_run(run, latency=latency)
    write_outputs(run, result)
    return metrics, result


def _row(scenario, metric, value, target="", ok=None):
    return {"scenario": scenario, "metric": metric, "value": value, "target": target,
            "met": "" if ok is None else ("yes" if ok else "NO")}


def bench_machine_health(args, work: Path) -> list[dict]:
    from edge_gmm.data.synth import synthesize
    from edge_gmm.train.run import resolve_config

    # many short sessions (see examples/machine-health.yaml): ~1900 windows in --full, ~950 in the short run
    size = {"sessions_per_class": 20, "session_seconds": 10.0} if args.full else {"sessions_per_class": 12, "session_seconds": 8.0}
    t0 = time.perf_counter()
    ds = synthesize("machine-health", work / "machine-health", seed=0, **size)
    print(f"machine-health: synthesized in {time.perf_counter() - t0:.1f} s", flush=True)
    over = {} if args.full else {"train.epochs": 6, "train.student_epochs": 8}
    if args.student:  # before/after a change of the default student
        over["model.student"] = args.student
    cfg, ds = resolve_config(str(ds.path), str(DEMO_CONFIG), **over)
    metrics, res = _train_eval(cfg, ds, work / "run-machine-health")
    s, t = res["student"], res["teacher"]
    alone = s["ablation"]["alone"]
    best_mod = max(alone, key=alone.get)
    gain = 100 * (s["accuracy"] - alone[best_mod])
    ratio = s["accuracy"] / t["accuracy"]
    fl = s["flops"]["total"] / t["flops"]["total"]
    sc = "machine-health" + ("" if args.full else " (short)")
    train_s = metrics["seconds_total"]
    return [
        _row(sc, "teacher accuracy (test)", f"{100 * t['accuracy']:.1f} %"),
        _row(sc, "student fused accuracy (test)", f"{100 * s['accuracy']:.1f} %", ">= 97 %", s["accuracy"] >= 0.97),
        _row(sc, f"student best single modality ({best_mod})", f"{100 * alone[best_mod]:.1f} %"),
        _row(sc, "fusion gain over best single modality", f"{gain:+.1f} pts", ">= +10 pts", gain >= 10),
        _row(sc, "student / teacher accuracy", f"{100 * ratio:.1f} %", ">= 98 %", ratio >= 0.98),
        _row(sc, "student / teacher FLOPs", f"1/{1 / fl:.1f} ({s['flops']['total'] / 1e6:.1f} M vs {t['flops']['total'] / 1e6:.1f} M)",
             "<= 1/8", fl <= 1 / 8),
        _row(sc, "student / teacher CPU latency (batch 1, 1 thread)", f"{s['cpu_latency_ms']:.2f} ms / {t['cpu_latency_ms']:.2f} ms"),
        _row(sc, "training time teacher + student", f"{train_s:.0f} s ({metrics['windows']['train']} windows)",
             "<= 300 s" if args.full else "", (train_s <= 300) if args.full else None),
    ]


def _basicmotions_files(args) -> tuple[Path, Path] | None:
    if args.basicmotions:
        d = Path(args.basicmotions)
    else:
        spec = importlib.util.find_spec("aeon")
        if spec is None or not spec.submodule_search_locations:
            return None
        d = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "BasicMotions"
    train, test = d / "BasicMotions_TRAIN.ts", d / "BasicMotions_TEST.ts"
    return (train, test) if train.is_file() and test.is_file() else None


def bench_basicmotions(args, work: Path) -> list[dict]:
    from edge_gmm.data.importers import ImportOptions, import_dataset
    from edge_gmm.train.run import resolve_config

    files = _basicmotions_files(args)
    if files is None:
        print("BasicMotions: no .ts files (install aeon or pass --basicmotions DIR); skipped")
        return [_row("BasicMotions", "skipped", "no .ts files")]
    ds = import_dataset("ts", files[0], work / "basicmotions", test=files[1], opts=ImportOptions(rate=10.0, seed=0))
    cfg, ds = resolve_config(str(ds.path), None, **BASICMOTIONS_TRAIN)
    _, res = _train_eval(cfg, ds, work / "run-basicmotions", latency=False)
    rows = [_row("BasicMotions", "teacher test accuracy", f"{100 * res['teacher']['accuracy']:.1f} %"),
            _row("BasicMotions", "student test accuracy", f"{100 * res['student']['accuracy']:.1f} %", ">= 97.5 %",
                 res["student"]["accuracy"] >= 0.975)]
    if importlib.util.find_spec("aeon") is not None:
        from aeon.classification.convolution_based import MiniRocketClassifier
        from aeon.datasets import load_classification

        xtr, ytr = load_classification("BasicMotions", split="train")
        xte, yte = load_classification("BasicMotions", split="test")
        t0 = time.perf_counter()
        clf = MiniRocketClassifier(random_state=0).fit(xtr, ytr)
        acc = float((clf.predict(xte) == yte).mean())
        rows.append(_row("BasicMotions", "aeon MiniRocket test accuracy (same run)", f"{100 * acc:.1f} % (fit+predict {time.perf_counter() - t0:.1f} s)"))
    return rows


def bench_av_digits(args, work: Path) -> list[dict]:
    from edge_gmm.data.avdigits import build_av_digits
    from edge_gmm.errors import MissingDependencyError
    from edge_gmm.train.run import resolve_config

    try:
        ds = build_av_digits(work / "av-digits", per_digit=60 if args.full else 30, seed=0)
    except MissingDependencyError as e:
        print(f"av-digits: {e}; skipped")
        return [_row("av-digits", "skipped", "espeak-ng/sox missing")]
    # ~420 training pairs: small batches, many epochs; with two modalities of which audio learns much
    # faster, modality dropout 0.5 and per-modality auxiliary heads keep the camera branch from starving
    epochs = 60 if args.full else 30
    cfg, ds = resolve_config(str(ds.path), None, **{
        "train.epochs": epochs, "train.student_epochs": epochs, "train.batch_size": 32, "train.patience": 15,
        "train.aux_weight": 1.0, "train.lr": 3e-3, "model.modality_dropout": 0.5})
    _, res = _train_eval(cfg, ds, work / "run-av-digits", latency=False)
    s = res["student"]
    alone = s["ablation"]["alone"]
    ok = all(s["accuracy"] > v for v in alone.values())
    return [_row("av-digits", "student fused / audio alone / camera alone",
                 f"{100 * s['accuracy']:.1f} / {100 * alone.get('audio', float('nan')):.1f} / {100 * alone.get('camera', float('nan')):.1f} %",
                 "fused > each", ok),
            _row("av-digits", "teacher fused accuracy", f"{100 * res['teacher']['accuracy']:.1f} %")]


BENCHES = {"machine-health": bench_machine_health, "basicmotions": bench_basicmotions, "av-digits": bench_av_digits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the issue's sizes (default synthetic set, demo config)")
    ap.add_argument("--only", action="append", choices=list(BENCHES), help="run only these (repeatable)")
    ap.add_argument("--basicmotions", help="folder with BasicMotions_TRAIN.ts and BasicMotions_TEST.ts")
    ap.add_argument("--student", help="machine-health: this student preset instead of the demo config's")
    ap.add_argument("--work", help="keep datasets and runs here (default: a temporary folder)")
    ap.add_argument("--no-publish", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only or list(BENCHES):
            print(f"== {name}", flush=True)
            rows += BENCHES[name](args, work)
    command = "python benchmarks/bench_model.py" + (" --full" if args.full else "") + "".join(f" --only {o}" for o in args.only or [])
    table = md_table(rows, ["scenario", "metric", "value", "target", "met"])
    publish("model", "Model: fusion, distillation, BasicMotions, av-digits", command, table,
                notes="Accuracies on each dataset's test split; CPU latency is eager torch, batch 1, one thread.",
                write=not args.no_publish)


if __name__ == "__main__":
    main()
