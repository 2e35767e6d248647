"""`edge-gmm train`: resolve the config against a dataset, train the teacher, distill the student, write the run."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from edge_gmm.config import FusionConfig, from_dict, read_mapping, to_dict
from edge_gmm.errors import ConfigError, DataError
from edge_gmm.train.checkpoint import load_weights, save_weights, write_run_json
from edge_gmm.train.distributed import Dist, setup, teardown
from edge_gmm.train.features import FeatureSet, featurize
from edge_gmm.train.loop import Distill, fit, predict


def resolve_config(dataset: str | None = None, config: str | None = None, **overrides):
    """FusionConfig from an optional file, with --dataset and per-key overrides; window from the dataset
    manifest unless the file sets one. Returns (config, opened Dataset)."""
    from edge_gmm.data.format import Dataset

    mapping = read_mapping(config) if config else {}
    cfg = from_dict(FusionConfig, mapping, source=str(config or "<defaults>"))
    if dataset:
        cfg.dataset = str(dataset)
    if not cfg.dataset:
        raise ConfigError("no dataset given", hint="pass --dataset DIR or set 'dataset:' in the config file")
    path = Path(cfg.dataset)
    if not path.is_absolute() and not path.exists() and config:
        path = Path(config).parent / path  # a config's relative dataset path is relative to the config file
    ds = Dataset.open(path)
    cfg.dataset = str(path.resolve())
    if "window" not in mapping and ds.window is not None:
        cfg.window = ds.window
    for key, value in overrides.items():  # "train.epochs" -> cfg.train.epochs
        if value is None:
            continue
        section, name = key.split(".")
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **{name: value}))  # validated like the file
    return cfg, ds


def select(cfg: FusionConfig, ds):
    names = cfg.modalities or [s.name for s in ds.sensors]
    for m in names:
        ds.sensor(m)  # raises DataError naming the modalities the dataset has
    sensors = [s for s in ds.sensors if s.name in names]  # the dataset's order = the mask's column order
    tasks = [ds.task(t) for t in (cfg.tasks or [t.name for t in ds.tasks])]
    return sensors, tasks


def load_split(ds, split: str, cfg: FusionConfig, sensors, tasks):
    from edge_gmm.data.windowing import make_windows

    return make_windows(ds, split, cfg.window, [s.name for s in sensors], [t.name for t in tasks])


def train_and_val(ds, cfg: FusionConfig, sensors, tasks):
    """(train windows, validation windows, where validation came from). The dataset's 'val' split when it has
    one (importers carve it from the training sessions, stratified by class; a held-out test file is never
    touched); else about every 7th training session of each class, else every 7th window."""
    import numpy as np

    train = load_split(ds, "train", cfg, sensors, tasks)
    if ds.splits.get("val"):
        val = load_split(ds, "val", cfg, sensors, tasks)
        return train, val, f"the dataset's 'val' split ({len(ds.splits['val'])} sessions)"
    primary = next((t.name for t in tasks if t.type == "classification"), None)
    label_of = {s: int(y) for s, y in zip(train.session, train.labels[primary])} if primary else {}
    by_class: dict[int, list[str]] = {}
    for s in sorted(set(train.session)):
        by_class.setdefault(label_of.get(s, -1), []).append(s)
    held = {s for group in by_class.values() if len(group) >= 4 for s in group[3::7]}
    is_val = np.array([s in held for s in train.session], dtype=bool)
    how = f"every 7th training session of each class ({len(held)} sessions)"
    if not is_val.any():  # too few sessions: validate on every 7th window instead
        is_val = np.arange(len(train.session)) % 7 == 3
        how = "every 7th training window (too few sessions to hold whole ones out)"
    return train.select(~is_val), train.select(is_val), how


def train_run(cfg: FusionConfig, ds, out: str | Path, *, resume: bool = False, progress=None,
              log: Callable[[str], None] = print) -> dict:
    """Train teacher then student into run directory `out`; returns the metrics written to metrics.json."""
    out = Path(out)
    dist = setup()
    try:
        return _train(cfg, ds, out, resume, progress, log, dist)
    finally:
        teardown(dist)


def _train(cfg, ds, out: Path, resume: bool, progress, log, dist: Dist) -> dict:
    from edge_gmm.model import build_model, flops

    t0 = time.perf_counter()
    threads = cfg.train.threads or max(1, usable_cpus() // dist.world)
    torch.set_num_threads(threads)
    sensors, tasks = select(cfg, ds)
    if (out / "run.json").exists() and not resume and any((out / f"{r}.safetensors").exists() for r in ("teacher", "student")):
        raise ConfigError(f"{out}: already holds a trained run", hint="pass --resume to continue it, or choose another --out")
    if dist.main:
        write_run_json(out, cfg, sensors, cfg.window, tasks, cfg.dataset)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if resume and metrics_path.exists() else {}
    log(f"windowing {ds.path} ({', '.join(s.name for s in sensors)}) ...")
    train_w, val_w, val_from = train_and_val(ds, cfg, sensors, tasks)
    val_trained_on = 0 < len(val_w) < cfg.train.min_val_windows
    if val_trained_on:
        # too few to pick an epoch by (train/loop.py keeps the last one then): they are worth more as training data
        from edge_gmm.data.windowing import Windows

        train_w = Windows.concat([train_w, val_w])
        val_from += ", too few to select on: trained on as well (the validation score is not held out)"
    n_train, n_val = len(train_w.mask), len(val_w.mask)
    if n_train == 0:
        raise DataError(f"{ds.path}: the train split gives no windows", hint="check the window length against the sessions")
    metrics["windows"] = {"train": n_train, "val": n_val, "val_from": val_from, "val_trained_on": val_trained_on}
    log(f"{n_train} training windows, {n_val} validation windows from {val_from}, {threads} threads, "
        f"{dist.world} process(es)")

    def build(role: str, preset: str):
        torch.manual_seed(cfg.train.seed + (0 if role == "teacher" else 1))
        return build_model(preset, sensors, cfg.window, tasks, cfg.model)

    budget = cfg.train.time_budget_s
    deadlines = {"teacher": t0 + 0.6 * budget, "student": t0 + budget} if budget > 0 else {}

    def train_role(role: str, preset: str, epochs: int, teacher=None, teacher_feats: FeatureSet | None = None):
        model = build(role, preset)
        weights = out / f"{role}.safetensors"
        if resume and weights.exists() and role in metrics:
            load_weights(model, weights)
            log(f"{role}: already trained, loaded {weights.name}")
            return model.to(dist.device), None
        tf, vf = featurize(model, train_w), featurize(model, val_w)
        model.set_norm_stats(tf.feats, tf.mask)
        model.to(dist.device)
        distill = None
        if teacher is not None:  # its answers on the clean windows; on a small set also online (loop.py, Distill)
            targets = predict(teacher, teacher_feats, device=dist.device)
            distill = Distill({t.name: targets[f"logits_{t.name}"] for t in tasks if t.type == "classification"},
                              targets["embedding"], teacher=teacher if n_train < cfg.train.distill_online_below else None,
                              teacher_feats=teacher_feats)
        res = fit(model, tf, vf, cfg.train, epochs, modality_dropout_p=cfg.model.modality_dropout, distill=distill,
                  state_path=out / "state" / f"{role}.pt", resume=resume, dist=dist, desc=role, progress=progress, log=log,
                  deadline=deadlines.get(role))
        _fit_anomaly(model, tf, dist)
        info = model.describe() | {"flops": flops(model.cpu()), "history": res.history, "best_epoch": res.best_epoch,
                                   "val_acc": res.best_score, "seconds": round(res.seconds, 2)}
        model.to(dist.device)
        metrics[role] = info
        if dist.main:
            save_weights(model, weights)
            metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        log(f"{role} ({preset}): val acc {res.best_score:.4f} at epoch {res.best_epoch}, "
            f"{info['parameters']:,} params, {info['flops']['total'] / 1e6:.1f} MFLOP/window, {res.seconds:.1f} s")
        dist.barrier()
        return model, tf

    teacher, teacher_feats = train_role("teacher", cfg.model.preset, cfg.train.epochs)
    if teacher_feats is None:  # teacher loaded on resume
        teacher_feats = featurize(teacher.cpu(), train_w)
        teacher.to(dist.device)
    train_role("student", cfg.model.student, cfg.train.student_epochs or cfg.train.epochs, teacher, teacher_feats)
    metrics["seconds_total"] = round(time.perf_counter() - t0, 2)
    metrics["config"] = to_dict(cfg)
    if dist.main:
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        from edge_gmm.train.plots import plot_curves

        plot_curves(metrics, out / "plots" / "curves.png")
    return metrics


def usable_cpus() -> int:
    """CPUs this process may run on (taskset/cgroup affinity), not the machine's count: 16 threads on
    2 allowed cores made an epoch 8x slower (measured)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _fit_anomaly(model, data: FeatureSet, dist: Dist) -> None:
    heads = [model.heads[t.name] for t in model.tasks if t.type == "anomaly"]
    if heads:
        emb = predict(model, data, device=dist.device)["embedding"]
        for h in heads:
            h.fit(emb.to(h.center.device))
