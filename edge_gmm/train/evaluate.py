"""Evaluate a run's teacher and student on a split: accuracy, macro-F1, confusion, modality ablation,
parameters, FLOPs and CPU latency, side by side under the keys `teacher` and `student`."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edge_gmm.errors import DataError
from edge_gmm.train import metrics as M
from edge_gmm.train.checkpoint import ROLES, Run
from edge_gmm.train.features import FeatureSet, featurize
from edge_gmm.train.loop import predict


def task_scores(model, data: FeatureSet, out: dict[str, torch.Tensor]) -> dict[str, dict]:
    scores = {}
    for t in model.tasks:
        if t.type != "classification":
            continue
        y = data.labels[t.name].numpy()
        pred = out[f"logits_{t.name}"].argmax(-1).numpy()
        cm = M.confusion(y, pred, len(t.labels))
        scores[t.name] = {"accuracy": M.accuracy(cm), "macro_f1": M.macro_f1(cm), "confusion": cm.tolist(),
                          "labels": list(t.labels), "windows": int(cm.sum())}
    return scores


def ablation(model, data: FeatureSet, task: str) -> dict[str, dict[str, float]]:
    """Accuracy on `task` with each modality alone and with all but one, by editing the mask.
    'alone' counts only windows where that modality was recorded (else the sample would have no input)."""
    labels = data.labels[task].numpy()
    res: dict[str, dict[str, float]] = {"alone": {}, "without": {}}
    for i, m in enumerate(model.modalities):
        onehot = torch.zeros(len(model.modalities))
        onehot[i] = 1
        for name, mask in (("alone", data.mask * onehot), ("without", data.mask * (1 - onehot))):
            keep = (mask.sum(1) > 0).numpy() & (labels >= 0)
            if name == "without" and len(model.modalities) == 1:
                continue
            pred = predict(model, data, mask=mask)[f"logits_{task}"].argmax(-1).numpy()
            res[name][m] = float((pred[keep] == labels[keep]).mean()) if keep.any() else float("nan")
    return res


def cpu_latency_ms(model, repeats: int = 30) -> float:
    """Median eager-torch latency of one window (batch 1, raw inputs, front end included) on this CPU."""
    inputs, mask = model.example_inputs(1)
    model.eval()
    with torch.inference_mode():
        for _ in range(3):
            model(inputs, mask)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(inputs, mask)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def evaluate_run(run: Run, dataset: str | None = None, split: str = "test", latency: bool = True,
                 progress=None) -> dict:
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.windowing import make_windows
    from edge_gmm.model import flops

    ds = Dataset.open(dataset or run.dataset)
    windows = make_windows(ds, split, run.window, run.modalities, [t.name for t in run.tasks])
    if len(windows) == 0:
        raise DataError(f"{ds.path}: split {split!r} gives no windows", hint="pick another --split")
    primary = next((t.name for t in run.tasks if t.type == "classification"), None)
    result: dict = {"run": str(run.path), "dataset": str(ds.path), "split": split, "windows": len(windows),
                    "primary_task": primary, "modalities": run.modalities}
    roles = [r for r in ROLES if run.model(r) is not None]
    if not roles:
        raise DataError(f"{run.path}: no trained model in this run", hint="train it first with 'edge-gmm train'")
    bar = progress(total=len(roles), desc="evaluate") if progress else None
    for role in roles:
        model = run.model(role).eval()
        data = featurize(model, windows)
        out = predict(model, data)
        tasks = task_scores(model, data, out)
        entry = {"preset": model.preset_name, "parameters": sum(p.numel() for p in model.parameters()),
                 "flops": flops(model), "tasks": tasks}
        if primary:
            entry["accuracy"] = tasks[primary]["accuracy"]
            entry["macro_f1"] = tasks[primary]["macro_f1"]
            entry["ablation"] = ablation(model, data, primary)
        if latency:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # a device-like single stream; also stable on a shared machine
            try:
                entry["cpu_latency_ms"] = round(cpu_latency_ms(model), 3)
            finally:
                torch.set_num_threads(threads)
        result[role] = entry
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if "teacher" in result and "student" in result and primary:
        t, s = result["teacher"], result["student"]
        result["student_vs_teacher"] = {
            "accuracy_ratio": s["accuracy"] / t["accuracy"] if t["accuracy"] else float("nan"),
            "flops_ratio": s["flops"]["total"] / t["flops"]["total"],
            "parameters_ratio": s["parameters"] / t["parameters"],
        }
    return result


def write_outputs(run: Run, result: dict) -> Path:
    """Figures under RUN/plots and RUN/report.md; returns the report's path."""
    from edge_gmm.train.plots import plot_confusions, plot_curves
    from edge_gmm.train.report import render_report

    plots = run.path / "plots"
    figures = {}
    primary = result.get("primary_task")
    for task in (result.get("teacher") or result.get("student"))["tasks"]:
        cms = {r: np.array(result[r]["tasks"][task]["confusion"]) for r in ROLES if r in result}
        labels = (result.get("teacher") or result.get("student"))["tasks"][task]["labels"]
        figures[f"confusion_{task}"] = plot_confusions(cms, labels, plots / f"confusion_{task}.png", f"({task})")
    if run.metrics:
        figures["curves"] = plot_curves(run.metrics, plots / "curves.png")
    report = run.path / "report.md"
    report.write_text(render_report(run, result, {k: v.relative_to(run.path) for k, v in figures.items()}, primary))
    return report
