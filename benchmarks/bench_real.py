"""Real-data suite (issue 11): real datasets that install offline, imported with the project's importers,
trained with DEFAULTS ONLY (what `edge-gmm train --dataset DIR --out RUN` does: no config, no flags),
scored on each dataset's own test split beside peers fitted in the same run on the same windows.

    .venv/bin/python benchmarks/bench_real.py                    # every row (long: tens of minutes on 2 cores)
    .venv/bin/python benchmarks/bench_real.py --quick            # smoke: GunPoint + digits, tiny time budget
    .venv/bin/python benchmarks/bench_real.py --only gunpoint --only kws --seeds 3 --no-publish --json rows.json

Per row: teacher and student test accuracy (torch, `evaluate_run`), then the student exported for
`cpu-onnx-int8` with the test split as evaluation set: FP32 and INT8 accuracy from the bundle's manifest,
and latency per window from ONNX Runtime (batch 1, one thread). The only overrides ever passed are
`train.seed` (--seeds) and, in --quick, `train.time_budget_s` where TrainSpec has it. Each row runs in a
child process, so a row that dies (out of memory, killed) or overruns --row-timeout is an ERROR line and
the rest still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import real_data, real_peers, real_table  # noqa: E402
from benchmarks.report import publish  # noqa: E402

# key -> (title, build(work) -> Dataset, splits the peer fits on, peer(train_windows, test_windows) -> dict)
ROWS = {**{k: (v, partial(real_data.import_ts, k), ("train", "val"), real_peers.minirocket) for k, v in real_data.TS_SETS.items()},
        "kws": ("keywords (espeak-ng, unseen voices)", real_data.import_kws, ("train", "val"), real_peers.logistic_audio),
        "digits": ("sklearn digits 8x8", real_data.import_digits, ("train", "val"), real_peers.logistic_pixels),
        "av-digits": ("av-digits (audio + image)", real_data.build_avdigits, ("train",), real_peers.av_fusion)}
QUICK_ROWS = ["gunpoint", "digits"]
QUICK_BUDGET_S = 10.0  # train.time_budget_s in --quick, only where TrainSpec has that field
FIT_BUDGET_S = 300.0  # the target: training any row on 2 cores within 5 minutes
MEAN_KEYS = ("teacher", "student_torch", "student_fp32", "student_int8", "fit_s", "ms_fp32", "ms_int8")


def _log(line: str) -> None:
    print("   ", line, flush=True)


def _value(text: str):
    """A --set value as the config file would give it: int, float, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def overrides(seed: int, quick: bool, sets: list[str] | None = None) -> dict:
    """train.seed, the --quick budget, and any --set KEY=VALUE (an experiment: the row is no longer defaults-only)."""
    from edge_gmm.config import TrainSpec

    over = {"train.seed": seed, **{k: _value(v) for k, v in (kv.split("=", 1) for kv in sets or [])}}
    if quick and hasattr(TrainSpec(), "time_budget_s"):
        over["train.time_budget_s"] = QUICK_BUDGET_S
    return over


def export_int8(run_dir: Path, out: Path):
    """Export for cpu-onnx-int8; when the INT8 accuracy gate refuses the model, export again with the gate
    open so the table still shows the INT8 number, and say the gate failed (a user would get no bundle)."""
    from edge_gmm.export.gates import ExportGateError
    from edge_gmm.export.pipeline import export_run
    from edge_gmm.export.targets import load_target

    target = load_target("cpu-onnx-int8")
    shutil.rmtree(out, ignore_errors=True)
    try:
        return export_run(run_dir, target=target, out=out, eval_split="test", log=_log), "ok"
    except ExportGateError as e:
        _log(f"INT8 gate failed ({str(e).splitlines()[0][:160]}); measuring with the gate open")
    shutil.rmtree(out, ignore_errors=True)
    opened = dataclasses.replace(target, max_accuracy_drop=100.0, min_top1_agreement=0.0)
    return export_run(run_dir, target=opened, out=out, eval_split="test", log=_log), "FAILED"


def train_and_measure(ds, work: Path, tag: str, seed: int, quick: bool, sets: list[str] | None = None):
    """Train with defaults exactly as `edge-gmm train --dataset` does, then evaluate, export and time."""
    from edge_gmm.runtime.bench import bench_bundle
    from edge_gmm.train.checkpoint import load_run
    from edge_gmm.train.evaluate import evaluate_run
    from edge_gmm.train.run import resolve_config, train_run

    cfg, ds = resolve_config(str(ds.path), None, **overrides(seed, quick, sets))
    run_dir = work / f"run-{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    metrics = train_run(cfg, ds, run_dir, log=_log)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = evaluate_run(load_run(run_dir), split="test", latency=False)
    t2 = time.perf_counter()
    res, gate = export_int8(run_dir, work / f"bundle-{tag}")
    t3 = time.perf_counter()
    acc = {p: next(iter(res.manifest["metrics"][p]["accuracy"].values())) for p in ("fp32", "int8")}  # percent
    lat = bench_bundle(res.bundle, runners=("onnxrt",), threads=(1,), iters=100 if quick else 300, max_s=3.0 if quick else 10.0)
    ms = {r["precision"]: r.get("median_ms", float("nan")) for r in lat}
    phases = {"train": fit_s, "evaluate": t2 - t1, "export": t3 - t2, "latency": time.perf_counter() - t3}
    out = {"seed": seed, "teacher": 100 * ev["teacher"]["accuracy"], "student_torch": 100 * ev["student"]["accuracy"],
           "student_fp32": acc["fp32"], "student_int8": acc["int8"], "int8_gate": gate, "fit_s": fit_s,
           "ms_fp32": ms.get("fp32", float("nan")), "ms_int8": ms.get("int8", float("nan")),
           "windows": {**metrics["windows"], "test": ev["windows"]},
           "epochs": {r: len(metrics[r]["history"]) for r in ("teacher", "student")}, "phase_s": phases,
           "student_alone": {m: 100 * v for m, v in ev["student"]["ablation"]["alone"].items()}}
    _log(f"seed {seed}: teacher {out['teacher']:.1f} %, student FP32 {out['student_fp32']:.1f} % / INT8 "
         f"{out['student_int8']:.1f} % (gate {gate}), {out['ms_int8']:.2f} ms/window; seconds: "
         + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
    return out, cfg.window


def targets(row: dict) -> dict:
    """The issue's targets: the deployed model (INT8) against the peer, the FP32 student against the teacher,
    teacher + student training within 5 minutes."""
    t = {"vs_peer": row["student_int8"] >= row["peer_acc"] - 1, "vs_teacher": row["student_fp32"] >= row["teacher"] - 1,
         "fit_5min": row["fit_s"] <= FIT_BUDGET_S}
    if "peer_audio_acc" in row:  # av-digits: fusion must beat each modality's peer and their late fusion
        t["vs_best_single"] = row["student_int8"] > max(row["peer_audio_acc"], row["peer_camera_acc"])
        t["vs_late_fusion"] = row["student_int8"] > row["peer_acc"]
    return t


def run_row(key: str, args, work: Path) -> dict:
    title, build, fit_splits, peer = ROWS[key]
    t0 = time.perf_counter()
    ds = build(work)
    _log(f"dataset {ds.path} ready in {time.perf_counter() - t0:.0f} s")
    seeds, window = [], None
    for seed in range(args.seeds):
        one, window = train_and_measure(ds, work, f"{key}-s{seed}", seed, args.quick, args.set)
        seeds.append(one)
    wins = real_peers.windows_by_split(ds, window)
    p = peer(real_peers.concat([wins[s] for s in fit_splits]), wins["test"])
    _log(f"peer {p['peer']}: {p['peer_acc']:.1f} % (fit {p['peer_fit_s']:.1f} s, on {'+'.join(fit_splits)})")
    row = {"key": key, "dataset": title, **p, **{k: float(np.mean([s[k] for s in seeds])) for k in MEAN_KEYS},
           "windows": {s: len(w) for s, w in wins.items()}, "model_windows": seeds[0]["windows"], "int8_gate": "ok" if all(s["int8_gate"] == "ok" for s in seeds) else "FAILED",
           "student_alone": {m: float(np.mean([s["student_alone"][m] for s in seeds])) for m in seeds[0]["student_alone"]},
           "seeds": len(seeds), "per_seed": seeds, "peer_fit_on": "+".join(fit_splits)}
    row["targets"] = targets(row)
    row["row_s"] = time.perf_counter() - t0
    row["load_avg_1_5_15"] = os.getloadavg()  # fit seconds mean little on a machine someone else is loading
    return row


def row_worker(key: str, args, work: Path) -> int:
    """--row KEY: measure one row in this process and leave its JSON for the parent."""
    try:
        row = run_row(key, args, work)
    except Exception as e:  # a broken row must not hide the others' numbers
        traceback.print_exc()
        row = {"key": key, "dataset": ROWS[key][0], "error": f"{type(e).__name__}: {e}"}
    (work / f"row-{key}.json").write_text(json.dumps(row, indent=1) + "\n")
    return 0


def run_isolated(key: str, args, work: Path) -> dict:
    """One row in a child process: a row that dies (killed, out of memory) or overruns --row-timeout
    becomes an error line, and the rows after it still run on a fresh process."""
    out = work / f"row-{key}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--row", key, "--work", str(work), "--seeds", str(args.seeds)] + ["--quick"] * args.quick
    cmd += [a for kv in args.set or [] for a in ("--set", kv)]
    try:
        rc = subprocess.run(cmd, timeout=args.row_timeout or None).returncode
    except subprocess.TimeoutExpired:
        return {"key": key, "dataset": ROWS[key][0], "error": f"timed out after {args.row_timeout:.0f} s (--row-timeout)"}
    if out.exists():
        return json.loads(out.read_text())
    why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
    return {"key": key, "dataset": ROWS[key][0], "error": f"row process died ({why}; out of memory?)"}


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(ROWS), help="run only these rows (repeatable)")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {' + '.join(QUICK_ROWS)} (unless --only), tiny time budget; never publishes")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per row (train.seed 0..N-1); the table shows the mean")
    ap.add_argument("--work", help="keep sources, datasets, runs and bundles here (default: a temporary folder)")
    ap.add_argument("--no-publish", action="store_true", help="print only; do not update docs/benchmarks.md")
    ap.add_argument("--json", help="also write the rows, per-seed details included, to this file")
    ap.add_argument("--row-timeout", type=float, default=0, help="seconds one row may take before it is stopped (0 = no limit)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a config override for every row, e.g. model.student=student-latent (an experiment: not defaults-only)")
    ap.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # internal: the child process of one row
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.row:
        return row_worker(args.row, args, Path(args.work))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for key in args.only or (QUICK_ROWS if args.quick else list(ROWS)):
            print(f"== {key}", flush=True)
            t0 = time.perf_counter()
            rows.append(run_isolated(key, args, work))
            print(f"== {key}: {time.perf_counter() - t0:.0f} s" + (f" ERROR {rows[-1]['error']}" if "error" in rows[-1] else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    cmd = "python benchmarks/bench_real.py" + " --quick" * args.quick + "".join(f" --only {k}" for k in args.only or [])
    cmd += f" --seeds {args.seeds}" if args.seeds != 1 else ""
    cmd += "".join(f" --set {kv}" for kv in args.set or [])
    publish("real", "Real data, defaults only, vs peers (issue 11)", cmd, real_table.render(rows), real_table.NOTES,
            write=not (args.no_publish or args.quick))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
