"""Peers side by side in one run: aeon's MiniRocket vs our distilled student (ONNX Runtime FP32 and INT8).

For BasicMotions (real smartwatch IMU, UEA) and the synthetic machine-health scenario: test accuracy, fit
time, and latency per window at batch 1 on one thread. MiniRocket sees what a time-series classifier can
take: the equal-rate series (BasicMotions' 6 channels; machine-health's IMU plus the slow series repeated to
the IMU's rate). Our student sees every modality the dataset has.

    .venv/bin/python benchmarks/bench_peers.py            # both datasets (several minutes on 2 cores)
    .venv/bin/python benchmarks/bench_peers.py --only basicmotions --no-publish
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_model import BASICMOTIONS_TRAIN, DEMO_CONFIG, _basicmotions_files  # noqa: E402
from benchmarks.report import md_table, publish  # noqa: E402


def _student(cfg, ds, work: Path, name: str) -> tuple[list[dict], float]:
    """Train teacher + student, export FP32 + INT8 for the CPU, measure test accuracy and latency per precision."""
    from edge_gmm.export.pipeline import export_run
    from edge_gmm.export.targets import load_target
    from edge_gmm.runtime.bench import bench_bundle
    from edge_gmm.train.run import train_run

    t0 = time.perf_counter()
    train_run(cfg, ds, work / f"run-{name}", log=lambda m: print("   ", m, flush=True))
    fit_s = time.perf_counter() - t0
    res = export_run(work / f"run-{name}", target=load_target("cpu-onnx-int8"), out=work / f"bundle-{name}",
                     eval_split="test", log=lambda m: print("   ", m, flush=True))
    latency = {r["precision"]: r for r in bench_bundle(res.bundle, runners=("onnxrt",), threads=(1,), iters=300, max_s=10.0)}
    rows = []
    for precision in ("fp32", "int8"):
        acc = next(iter(res.manifest["metrics"][precision]["accuracy"].values()))  # percent, primary task
        rows.append({"model": f"edge-gmm student, ORT {precision.upper()}", "inputs": "all modalities",
                     "test accuracy %": round(acc, 1), "fit s": round(fit_s, 1),
                     "ms / window": round(latency[precision]["median_ms"], 3)})
    return rows, fit_s


def _series(windows, names: list[str]) -> np.ndarray:
    """(W, C, T) equal-length series for MiniRocket: the named [W, C, T] inputs, slower ones repeated to the longest."""
    arrays = [windows.inputs[n] for n in names]
    t = max(a.shape[-1] for a in arrays)
    return np.concatenate([np.repeat(a, t // a.shape[-1], axis=-1)[..., :t] for a in arrays], axis=1).astype(np.float64)


def _minirocket(ds, window, names: list[str], task: str) -> dict:
    from aeon.classification.convolution_based import MiniRocketClassifier

    from edge_gmm.data.windowing import make_windows

    train = make_windows(ds, "train", window, modalities=[s.name for s in ds.sensors], tasks=[task])
    test = make_windows(ds, "test", window, modalities=[s.name for s in ds.sensors], tasks=[task])
    xtr, ytr, xte, yte = _series(train, names), train.labels[task], _series(test, names), test.labels[task]
    t0 = time.perf_counter()
    clf = MiniRocketClassifier(random_state=0, n_jobs=1).fit(xtr, ytr)
    fit_s = time.perf_counter() - t0
    acc = float((clf.predict(xte) == yte).mean())
    one = xte[:1]
    clf.predict(one)  # warm-up
    t0 = time.perf_counter()
    n = 30
    for _ in range(n):
        clf.predict(one)
    ms = 1000 * (time.perf_counter() - t0) / n
    return {"model": "aeon MiniRocket", "inputs": "+".join(names), "test accuracy %": round(100 * acc, 1),
            "fit s": round(fit_s, 1), "ms / window": round(ms, 3)}


def bench_basicmotions(work: Path) -> list[dict]:
    from edge_gmm.data.importers import ImportOptions, import_dataset
    from edge_gmm.train.run import resolve_config

    files = _basicmotions_files(argparse.Namespace(basicmotions=None))
    if files is None:
        print("BasicMotions: aeon's .ts files not found; skipped")
        return []
    ds = import_dataset("ts", files[0], work / "basicmotions", test=files[1], opts=ImportOptions(rate=10.0, seed=0))
    cfg, ds = resolve_config(str(ds.path), None, **BASICMOTIONS_TRAIN)
    rows, _ = _student(cfg, ds, work, "basicmotions")
    names = [s.name for s in ds.sensors]
    rows.insert(0, _minirocket(ds, cfg.window, names, cfg.tasks[0] if cfg.tasks else ds.tasks[0].name))
    return [{"dataset": "BasicMotions", **r} for r in rows]


def bench_machine_health(work: Path) -> list[dict]:
    from edge_gmm.data.synth import synthesize
    from edge_gmm.train.run import resolve_config

    ds = synthesize("machine-health", work / "machine-health", seed=0, sessions_per_class=20, session_seconds=10.0)
    cfg, ds = resolve_config(str(ds.path), str(DEMO_CONFIG))
    rows, _ = _student(cfg, ds, work, "machine-health")
    rows.insert(0, _minirocket(ds, cfg.window, ["imu", "env"], "state"))
    return [{"dataset": "machine-health (synthetic)", **r} for r in rows]


BENCHES = {"basicmotions": bench_basicmotions, "machine-health": bench_machine_health}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(BENCHES), help="run only these (repeatable)")
    ap.add_argument("--work", help="keep datasets, runs and bundles here (default: a temporary folder)")
    ap.add_argument("--no-publish", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()
    if importlib.util.find_spec("aeon") is None:
        sys.exit("bench_peers needs aeon (pip install aeon, or the [dev] extra)")
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [r for name in (args.only or list(BENCHES)) for r in BENCHES[name](work)]
    table = md_table(rows, ["dataset", "model", "inputs", "test accuracy %", "fit s", "ms / window"])
    cmd = "python benchmarks/bench_peers.py" + "".join(f" --only {o}" for o in args.only or [])
    notes = ("Latency: batch 1, one thread (MiniRocket: `predict` on one window; student: ONNX Runtime session, "
             "`edge_gmm.runtime.bench`). Fit: MiniRocket's `fit`; the student's teacher training plus distillation. "
             "Accuracy on each dataset's test split.")
    publish("peers", "Peers: aeon MiniRocket vs the edge-gmm student (FP32 / INT8)", cmd, table, notes,
            write=not args.no_publish)


if __name__ == "__main__":
    main()
