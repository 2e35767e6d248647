"""CSV with a timestamp column: one session per file, every other numeric column a channel of one
timeseries modality (`series`). SRC is a .csv file, a folder of them, or a folder-per-class tree (class =
folder name, task `class`). `--label-column COL` turns per-row labels into time segments (task named COL).
Timestamps: numbers in --time-unit (s, ms, us, ns) or ISO 8601 dates; sessions start at 0 (the first stamp
is kept in meta). The rate is the median sample interval's inverse; nothing is resampled."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Segment, Session, Stream
from edge_gmm.data.importers.common import Parsed, session_id
from edge_gmm.errors import DataError

TIME_NAMES = ("timestamp", "time", "t", "time_s", "ts")
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _files(src: Path) -> list[tuple[str | None, Path]]:
    if src.is_file():
        return [(None, src)]
    if not src.is_dir():
        raise DataError(f"{src}: no such file or folder")
    subdirs = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        out = [(d.name, f) for d in subdirs for f in sorted(d.glob("*.csv"))]
    else:
        out = [(None, f) for f in sorted(src.glob("*.csv"))]
    if not out:
        raise DataError(f"{src}: no .csv files")
    return out


def read_csv(path: Path, opts) -> tuple[list[str], np.ndarray, np.ndarray, list[str] | None, float]:
    """(channel names, t[N] from 0, x[N, C], labels per row or None, first stamp in seconds)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    rows = list(csv.reader(text.splitlines()))
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header line and at least one data line")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if opts.time_column:
        if opts.time_column not in header:
            raise DataError(f"{path}:1: no column {opts.time_column!r}; columns are {header}")
        ti = header.index(opts.time_column)
    else:
        ti = next((lower.index(n) for n in TIME_NAMES if n in lower), None)
        if ti is None:
            raise DataError(f"{path}:1: no timestamp column (looked for {', '.join(TIME_NAMES)})", hint="name it with --time-column")
    li = None
    if opts.label_column:
        if opts.label_column not in header:
            raise DataError(f"{path}:1: no label column {opts.label_column!r}; columns are {header}")
        li = header.index(opts.label_column)
    chans = [i for i in range(len(header)) if i not in (ti, li)]
    if not chans:
        raise DataError(f"{path}:1: no data columns besides the timestamp")
    if opts.time_unit not in UNITS:
        raise DataError(f"--time-unit must be one of {', '.join(UNITS)}, got {opts.time_unit!r}")
    scale = UNITS[opts.time_unit]
    t, x, labels = [], [], []
    for no, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{no}: {len(row)} fields, the header has {len(header)}")
        t.append(_stamp(path, no, row[ti].strip(), scale))
        vals = []
        for i in chans:
            try:
                vals.append(float(row[i]))
            except ValueError:
                raise DataError(f"{path}:{no}: column {header[i]!r}: {row[i][:20]!r} is not a number") from None
        x.append(vals)
        if li is not None:
            labels.append(row[li].strip())
    t_arr = np.asarray(t, np.float64)
    if t_arr.size > 1 and np.any(np.diff(t_arr) < 0):
        bad = int(np.argmax(np.diff(t_arr) < 0)) + 3
        raise DataError(f"{path}:{bad}: timestamp goes backwards")
    x_arr = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x_arr)):
        raise DataError(f"{path}:{int(np.argwhere(~np.isfinite(x_arr))[0][0]) + 2}: non-finite value")
    return [header[i] for i in chans], t_arr - t_arr[0], x_arr.astype(np.float32), labels if li is not None else None, float(t_arr[0])


def _stamp(path: Path, no: int, text: str, scale: float) -> float:
    try:
        return float(text) * scale
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise DataError(f"{path}:{no}: timestamp {text[:30]!r} is neither a number nor an ISO date") from None


def _segments(task: str, t: np.ndarray, labels: list[str], period: float) -> list[Segment]:
    """Runs of equal per-row labels -> [first stamp, next run's first stamp) segments; empty labels are gaps."""
    segs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            end = t[i] if i < len(labels) else t[-1] + period
            if labels[start]:
                segs.append(Segment(task, float(t[start]), float(end), labels[start]))
            start = i
    return segs


def load(src: Path, test: Path | None, opts) -> Parsed:
    files = [(c, f, None) for c, f in _files(src)] + ([(c, f, "test") for c, f in _files(test)] if test else [])
    folders = {c is not None for c, _, _ in files}
    if len(folders) > 1:
        raise DataError(f"{src}: mix of class folders and loose .csv files")
    by_folder = folders == {True}
    if not by_folder and not opts.label_column:
        raise DataError(f"{src}: no labels", hint="put files in one folder per class, or name a per-row label column with --label-column")
    parsed, columns0, periods = [], None, []
    for c, f, split in files:
        cols, t, x, labels, t0 = read_csv(f, opts)
        if columns0 is None:
            columns0, first = cols, f
        elif cols != columns0:
            raise DataError(f"{f}:1: columns {cols} differ from {first}'s {columns0}")
        if t.size > 1:
            periods.append(float(np.median(np.diff(t))))
        parsed.append((c, f, split, t, x, labels, t0))
    period = float(np.median(periods)) if periods else 1.0
    if not period > 0:
        raise DataError(f"{src}: timestamps do not advance (median interval 0)", hint="check --time-unit and --time-column")
    tasks = []
    if by_folder:
        tasks.append(TaskSpec("class", "classification", sorted({c for c, *_ in parsed})))
    if opts.label_column:
        seen = sorted({lab for *_, labels, _ in parsed for lab in labels if lab})
        if len(seen) < 2:
            raise DataError(f"{src}: column {opts.label_column!r} holds fewer than two labels ({seen})")
        tasks.append(TaskSpec(opts.label_column, "classification", seen))
    name = opts.modality or "series"
    sessions = []
    for i, (c, f, split, t, x, labels, t0) in enumerate(parsed):
        segs = _segments(opts.label_column, t, labels, period) if labels is not None else []
        session = Session(session_id(split or "train", i), {name: Stream(t, x)}, {"class": c} if c else {}, segs, {"file": f.name, "t0": t0})
        sessions.append((session, split))
    sensor = SensorSpec(name, "timeseries", 1.0 / period, len(columns0), [])
    window = WindowSpec(opts.window_s or 1.0, opts.hop_s or (opts.window_s or 1.0) / 2)
    meta = {"source": str(src), "test_source": str(test) if test else None, "format": "csv", "columns": columns0}
    return Parsed(opts.name or (src.stem if src.is_file() else src.name), [sensor], tasks, window, sessions, meta)
