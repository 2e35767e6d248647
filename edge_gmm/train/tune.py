"""`edge-gmm tune`: where no single default fits a dataset, try a few and keep the best, within a time budget.

Each trial is a full `train` (teacher + student) with a few overrides on top of the user's config, given an
equal share of the budget (`train.time_budget_s`). Trials are scored by the student's accuracy on the
validation split, which tune always holds out (`train.min_val_windows = 0`: a normal `train` folds a very
small validation set into training; here it is the only fair judge). A student slower than `max_latency_ms`
(torch eager, batch 1, one thread) is out. The winner is written as a config file `train` reads
(OUT/best.yaml, with every trial in OUT/trials.json).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from edge_gmm.errors import ConfigError

# What to try, in order (the defaults first: a budget too small for all still measures them). One axis
# at a time: each of these moved a real-data row by points in benchmarks/bench_real.py experiments.
TRIALS: list[dict] = [
    {},
    {"train.augment": False},
    {"train.lr": 4e-3},
    {"train.lr": 1e-3},
    {"train.min_steps": 3000},
    {"model.student": "student-tiny"},
    {"model.patch_s": 0.05},
    {"model.patch_s": 0.25},
]


@dataclass
class Trial:
    overrides: dict
    val_acc: float = 0.0
    teacher_val_acc: float = 0.0
    latency_ms: float = 0.0
    seconds: float = 0.0
    eligible: bool = True
    error: str = ""
    config: dict = field(default_factory=dict)  # the full resolved config the trial trained with

    def row(self) -> dict:
        name = ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "defaults"
        return {"trial": name, "student_val_acc": round(self.val_acc, 4), "teacher_val_acc": round(self.teacher_val_acc, 4),
                "latency_ms": round(self.latency_ms, 3), "seconds": round(self.seconds, 1),
                "eligible": self.eligible and not self.error, "error": self.error}


@dataclass
class TuneResult:
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    config_path: Path | None = None


def tune(dataset: str | None, config: str | None, out: Path, budget_s: float, max_latency_ms: float = 0.0,
         trials: list[dict] | None = None, log: Callable[[str], None] = print) -> TuneResult:
    from edge_gmm.config import to_dict
    from edge_gmm.train.checkpoint import load_run
    from edge_gmm.train.evaluate import cpu_latency_ms
    from edge_gmm.train.run import resolve_config, train_run

    candidates = TRIALS if trials is None else trials
    out.mkdir(parents=True, exist_ok=True)
    share = budget_s / len(candidates)
    if share < 5:
        raise ConfigError(f"a budget of {budget_s:.0f} s leaves {share:.1f} s per trial for {len(candidates)} trials",
                          hint="give --budget at least 1m")
    result, deadline = TuneResult(), time.perf_counter() + budget_s
    for i, over in enumerate(candidates):
        left = deadline - time.perf_counter()
        if left < 0.5 * share:
            log(f"tune: budget spent after {i} of {len(candidates)} trials")
            break
        trial = Trial(dict(over))
        t0 = time.perf_counter()
        try:
            cfg, ds = resolve_config(dataset, config, **over, **{"train.time_budget_s": min(share, left),
                                                                  "train.min_val_windows": 0})
            metrics = train_run(cfg, ds, out / f"trial-{i}", log=lambda m: None)
            trial.val_acc, trial.teacher_val_acc = metrics["student"]["val_acc"], metrics["teacher"]["val_acc"]
            trial.latency_ms = cpu_latency_ms(load_run(out / f"trial-{i}", roles=("student",)).student)
            trial.eligible = not max_latency_ms or trial.latency_ms <= max_latency_ms
            trial.config = to_dict(cfg)
        except ConfigError as e:  # a bad trial (say a patch longer than the window) is skipped, not fatal
            trial.error = str(e).splitlines()[0]
        trial.seconds = time.perf_counter() - t0
        result.trials.append(trial)
        log(f"tune: trial {i + 1}/{len(candidates)} {trial.row()['trial']}: student val acc {trial.val_acc:.4f}, "
            f"{trial.latency_ms:.2f} ms, {trial.seconds:.0f} s" + (f" ({trial.error})" if trial.error else ""))
    ok = [t for t in result.trials if t.eligible and not t.error]
    if not ok:
        raise ConfigError("no trial met the constraints", hint="raise --max-latency-ms or --budget")
    result.best = max(ok, key=lambda t: (t.val_acc, t.teacher_val_acc, -t.latency_ms))
    best_cfg = dict(result.best.config)
    best_cfg["train"] = {**best_cfg["train"], "time_budget_s": 0.0}  # the budget was tune's, not the user's
    result.config_path = out / "best.yaml"
    header = f"# written by edge-gmm tune: the best of {len(result.trials)} trials ({result.best.row()['trial']})\n"
    result.config_path.write_text(header + yaml.safe_dump(best_cfg, sort_keys=False))
    (out / "trials.json").write_text(json.dumps([t.row() for t in result.trials], indent=2) + "\n")
    return result
