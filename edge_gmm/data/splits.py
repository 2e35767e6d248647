"""Reassign a dataset's sessions to train/val/test, stratified by one task's label (`edge-gmm dataset split`).

The importers' splitter (importers/common.py `assign_splits`) does the work, so a recorded dataset is split
exactly as an imported one: per label, shuffled with `seed`, about `test_frac` to test and `val_frac` to val,
at least one of each once a label has 3 sessions. A session's label for this is its session label, else
the label its segments cover longest (a recording labelled by a CSV track).
"""

from __future__ import annotations

from collections import defaultdict

from edge_gmm.data.format import Dataset, Session, reassign_splits
from edge_gmm.errors import ConfigError


def split_dataset(ds: Dataset, *, val_frac: float, test_frac: float, stratify: str | None = None, seed: int = 0) -> Dataset:
    """Reassign every session of `ds` and rewrite its manifest; returns the dataset reopened."""
    from edge_gmm.data.importers import ImportOptions
    from edge_gmm.data.importers.common import assign_splits

    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(f"--val {val_frac} and --test {test_frac}: each must be in [0, 1) and together below 1")
    task = _stratify_task(ds, stratify)
    ids = ds.session_ids()
    sessions = [(Session(sid, {}, {task.name: session_label(ds, sid, task.name)} if task else {}), None) for sid in ids]
    splits = assign_splits(sessions, [task] if task else [], ImportOptions(seed=seed, val_frac=val_frac, test_frac=test_frac))
    return reassign_splits(ds, dict(zip(ids, splits)))


def _stratify_task(ds: Dataset, name: str | None):
    """The task to stratify by: `name`, else the first classification task, else None (no stratification)."""
    if name is None:
        return next((t for t in ds.tasks if t.type != "regression"), None)
    task = ds.task(name)
    if task.type == "regression":
        raise ConfigError(f"--stratify {name}: a regression task has no classes to stratify by")
    return task


def session_label(ds: Dataset, sid: str, task: str):
    """The session's label for `task`, else the one its segments cover longest; None when it has neither."""
    labels = ds.sessions[sid].get("labels", {})
    if task in labels:
        return labels[task]
    cover: dict[str, float] = defaultdict(float)
    for seg in ds.load_session(sid, modalities=[]).segments:
        if seg.task == task:
            cover[str(seg.label)] += seg.end - seg.start
    return max(cover, key=cover.get) if cover else None
