"""Capture live sensors into the dataset format (what `edge-gmm record` runs).

`capture` polls anything with `chunks(timeout)` and `sensors()`: firmware_bridge readers, and the feeds of
devices/sources/feeds.py (the MCU, a microphone, a camera). Timestamps are stored relative to the start of
the recording (host clock, seconds); samples stamped before it are left out. Labels hold for the whole session (`labels`) or for time ranges of a
label track (`segments`, CSV: start,end,label[,task]).
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Dataset, DatasetWriter, Segment, Session, Stream
from edge_gmm.errors import ConfigError, DataError, DeviceError


def read_label_track(path: str | Path, default_task: str = "state") -> list[Segment]:
    """CSV rows `start,end,label[,task]` in seconds from the start of the recording; a header row is allowed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such label track")
    segs = []
    with p.open(newline="") as fh:
        for i, row in enumerate(csv.reader(fh), 1):
            if not row or row[0].strip().startswith("#") or (i == 1 and row[0].strip().lower() == "start"):
                continue
            try:
                start, end, label = float(row[0]), float(row[1]), row[2].strip()
            except (ValueError, IndexError):
                raise DataError(f"{p}:{i}: expected start,end,label[,task], got {','.join(row)!r}") from None
            if not end > start:
                raise DataError(f"{p}:{i}: end {end} must be after start {start}")
            segs.append(Segment(row[3].strip() if len(row) > 3 else default_task, start, end, label))
    return segs


def capture(readers, seconds: float | None, tick: Callable[[float], None] | None = None, stop=None,
            t_start: float | None = None) -> tuple[dict[str, Stream], list[SensorSpec], float]:
    """Collect chunks from started readers for `seconds` or until `stop()` returns True or Ctrl-C.
    `t_start`: the session's zero on the host clock (default: now), e.g. when the readers were started."""
    parts: dict[str, list] = defaultdict(list)
    begun = time.monotonic()
    t_start = begun if t_start is None else t_start
    try:
        while seconds is None or time.monotonic() - begun < seconds:
            if stop is not None and stop():
                break
            for r in readers:
                for c in r.chunks(timeout=0.05):
                    parts[c.modality].append(c)
            if tick is not None:
                tick(time.monotonic() - begun)
    except KeyboardInterrupt:  # Ctrl-C ends an open-ended recording; what was captured is kept
        pass
    for r in readers:
        for c in r.chunks(timeout=0):
            parts[c.modality].append(c)
    sensors = {s.name: s for r in readers for s in r.sensors()}
    streams = {}
    for name, chunks in parts.items():
        if name not in sensors:
            continue
        t = np.concatenate([c.t for c in chunks]) - t_start
        x = np.concatenate([c.x for c in chunks]).astype(np.float32)
        order = np.argsort(t, kind="stable")  # a clock re-anchor after a reconnect may step back a little
        t, x = t[order], x[order]
        keep = np.isfinite(x).reshape(len(x), -1).all(axis=1) & (t >= 0)  # an MCU may send NaN for "no reading"
        streams[name] = Stream(t[keep], x[keep])
    return streams, [sensors[n] for n in sorted(streams)], t_start


def write_recording(out: str | Path, streams: dict[str, Stream], sensors: list[SensorSpec], *,
                    labels: dict[str, str], segments: list[Segment], classes: dict[str, list[str]],
                    session_id: str, split: str = "train", name: str = "recording", append: bool = False,
                    overwrite: bool = False, meta: dict | None = None, window: WindowSpec | None = None) -> Dataset:
    """Write one session; with `append`, into the dataset at `out` (keeping its sessions, splits and window)."""
    if not streams:
        raise DeviceError("nothing was recorded: no sensor sent samples",
                          hint="check the port with 'edge-gmm bridge monitor URL' first")
    old: Dataset | None = Dataset.open(out) if append and Path(out).exists() else None
    tasks = _tasks(labels, segments, classes, old)
    if old is not None:
        have = {s.name: s for s in old.sensors}
        sensors = list(old.sensors) + [s for s in sensors if s.name not in have]
        name = old.name
        window = old.window or window
    session = Session(session_id, streams, dict(labels), list(segments), dict(meta or {}))
    with DatasetWriter(out, name=name, sensors=sensors, tasks=tasks, window=window, overwrite=overwrite or old is not None) as w:
        if old is not None:
            for split_name, ids in old.splits.items():
                for sid in ids:
                    w.add(old.load_session(sid), split_name)
        w.add(session, split)
    return Dataset.open(out)


def _tasks(labels, segments, classes, old: Dataset | None) -> list[TaskSpec]:
    seen: dict[str, list[str]] = defaultdict(list)
    if old is not None:
        for t in old.tasks:
            seen[t.name] += t.labels
    for task, lab in labels.items():
        seen[task].append(lab)
    for s in segments:
        seen[s.task].append(str(s.label))
    for task, labs in classes.items():
        seen[task] += labs
    tasks = []
    for task, labs in seen.items():
        uniq = list(dict.fromkeys(labs))
        if len(uniq) < 2:
            raise ConfigError(
                f"task {task!r} has only the label {uniq}; a classification task needs at least 2",
                hint=f"list its classes: --classes {task}={uniq[0] if uniq else 'a'},OTHER",
            )
        tasks.append(TaskSpec(task, "classification", uniq))
    return tasks
