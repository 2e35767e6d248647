"""What all importers share: the parsed result, class-stratified splits, right-aligned series, file listing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Dataset, DatasetWriter, Session
from edge_gmm.errors import DataError


@dataclass
class Parsed:
    """Sessions parsed from a source, each with a fixed split ("train"/"val"/"test") or None (to assign)."""

    name: str
    sensors: list[SensorSpec]
    tasks: list[TaskSpec]
    window: WindowSpec | None
    sessions: list[tuple[Session, str | None]]
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path, opts) -> Dataset:
        if not self.sessions:
            raise DataError(f"{self.meta.get('source', out)}: nothing to import (no sessions found)")
        splits = assign_splits(self.sessions, self.tasks, opts)
        with DatasetWriter(out, name=opts.name or self.name, sensors=self.sensors, tasks=self.tasks,
                           window=self.window, meta=self.meta, overwrite=opts.overwrite) as w:
            for (s, _), split in zip(self.sessions, splits):
                w.add(s, split)
        return Dataset.open(out)


def assign_splits(sessions: list[tuple[Session, str | None]], tasks: list[TaskSpec], opts) -> list[str]:
    """Sessions without a split go to train/val (and test when none was given), stratified by the first
    classification label, deterministically for opts.seed."""
    has_test = any(sp == "test" for _, sp in sessions)
    cls = next((t.name for t in tasks if t.type != "regression"), None)
    groups: dict[Any, list[int]] = {}
    for i, (s, sp) in enumerate(sessions):
        if sp is None:
            groups.setdefault(s.labels.get(cls) if cls else None, []).append(i)
    out = [sp or "train" for _, sp in sessions]
    rng = np.random.default_rng(opts.seed)
    for key in sorted(groups, key=str):
        idx = [groups[key][j] for j in rng.permutation(len(groups[key]))]
        n = len(idx)
        n_test = 0 if has_test else int(round(n * opts.test_frac))
        n_val = int(round(n * opts.val_frac))
        if n >= 3 and not has_test:
            n_test = max(1, n_test)
        if n >= 3:
            n_val = max(1, n_val)
        for r, i in enumerate(idx):
            out[i] = "test" if r < n_test else "val" if r < n_test + n_val else "train"
    return out


def right_aligned_times(n: int, n_max: int, rate: float) -> np.ndarray:
    """Sample times of an n-sample series that ends where an n_max-sample series starting at 0 would.
    Shorter series thus fill the end of a window of n_max samples; windowing repeats the first in front."""
    return (np.arange(n) + (n_max - n)) / rate


def whole_series_window(n_min: int, n_max: int, rate: float) -> WindowSpec:
    """One window per series of up to n_max samples: shorter ones still count as present."""
    length = n_max / rate
    return WindowSpec(length_s=length, hop_s=length, min_coverage=min(0.9, n_min / n_max), label_rule="majority")


def class_folders(src: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(class, file) pairs of a folder-per-class tree, sorted; DataError when the layout is not that."""
    if not src.is_dir():
        raise DataError(f"{src}: not a folder", hint="expected SRC/<class>/<file>, one folder per class")
    pairs = []
    for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.suffix.lower() in suffixes:
                pairs.append((d.name, f))
    if not pairs:
        raise DataError(f"{src}: no {'/'.join(suffixes)} files in class folders", hint="expected SRC/<class>/<file>")
    return pairs


def session_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i:05d}"


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h > 0 and w > 0:
            return h, w
    except ValueError:
        pass
    raise DataError(f"image size {text!r}: expected HxW, e.g. 32x32")
