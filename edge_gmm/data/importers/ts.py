"""UEA/UCR `.ts` files (sktime/aeon format): uni- and multivariate, equal and unequal length, classification
(@classLabel) or regression (@targetLabel), optional (timestamp,value) pairs, '?' for missing values.

Each case becomes one session with one modality (`series`, kind timeseries, channels = dimensions) and a
session label. .ts files carry no sample rate: `--rate` (default 1 Hz) sets it. Missing values are dropped
(their samples become gaps, which windowing masks by coverage).

Unequal lengths (`--unequal`): `pad` (default) keeps every series whole, right-aligned in time so they all
end where the longest ends; the recommended window spans the longest series and its min_coverage admits
the shortest, and windowing repeats a short series' first sample in front. `truncate` keeps the first
L_min samples of every series (data beyond is dropped and counted in the manifest's meta).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec
from edge_gmm.data.format import Session, Stream
from edge_gmm.data.importers.common import Parsed, right_aligned_times, session_id, whole_series_window
from edge_gmm.errors import DataError


class TsFile:
    """A parsed .ts file: header fields and cases (list of per-dimension (times|None, values) plus label)."""

    def __init__(self, path: Path):
        self.path = path
        self.header: dict[str, str] = {}
        self.class_labels: list[str] | None = None
        self.regression = False
        self.cases: list[tuple[list[tuple[np.ndarray | None, np.ndarray]], str | None, int]] = []
        self._parse()

    def err(self, line: int, msg: str) -> DataError:
        return DataError(f"{self.path}:{line}: {msg}")

    def _parse(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DataError(f"{self.path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{self.path}: cannot read: {e}") from None
        in_data = False
        for no, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith(("#", "%")):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise self.err(no, f"expected a @keyword header line or @data, got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    continue
                if key == "classlabel":
                    parts = value.split()
                    if parts and parts[0].lower() == "true":
                        if len(parts) < 3:
                            raise self.err(no, "@classLabel true needs at least two labels")
                        self.class_labels = parts[1:]
                elif key == "targetlabel":
                    self.regression = value.strip().lower() == "true"
                self.header[key] = value.strip()
                continue
            self.cases.append(self._case(no, line))
        if not in_data:
            raise DataError(f"{self.path}: no @data section (truncated or not a .ts file)")
        if not self.cases:
            raise DataError(f"{self.path}: @data section is empty")

    @property
    def labelled(self) -> bool:
        return self.class_labels is not None or self.regression

    @property
    def timestamps(self) -> bool:
        return self.header.get("timestamps", "false").lower() == "true"

    def _case(self, no: int, line: str):
        fields = _split_outside_parens(line, ":") if self.timestamps else line.split(":")
        label = None
        if self.labelled:
            if len(fields) < 2:
                raise self.err(no, "missing the label after the last ':'")
            label = fields.pop().strip()
            if self.class_labels is not None and label not in self.class_labels:
                raise self.err(no, f"label {label!r} is not declared in @classLabel {self.class_labels}")
            if self.regression:
                try:
                    float(label)
                except ValueError:
                    raise self.err(no, f"target {label!r} is not a number") from None
        dims = self.header.get("dimensions")
        if dims and dims.isdigit() and len(fields) != int(dims):
            raise self.err(no, f"{len(fields)} dimensions, header says @dimensions {dims}")
        series = [self._dimension(no, d, f) for d, f in enumerate(fields)]
        return series, label, no

    def _dimension(self, no: int, d: int, text: str):
        text = text.strip()
        if self.timestamps:
            times, values = [], []
            for k, pair in enumerate(p.strip() for p in _split_outside_parens(text, ",")):
                if not (pair.startswith("(") and pair.endswith(")")) or "," not in pair:
                    raise self.err(no, f"dimension {d}, pair {k}: expected (timestamp,value), got {pair[:30]!r}")
                ts, _, v = pair[1:-1].rpartition(",")
                times.append(_parse_time(ts.strip(), lambda m: self.err(no, f"dimension {d}, pair {k}: {m}")))
                values.append(self._value(no, d, k, v))
            return np.asarray(times, np.float64), np.asarray(values, np.float64)
        if not text:
            raise self.err(no, f"dimension {d} is empty")
        return None, np.asarray([self._value(no, d, k, v) for k, v in enumerate(text.split(","))], np.float64)

    def _value(self, no: int, d: int, k: int, v: str) -> float:
        v = v.strip()
        if v in ("?", "NaN", "nan", ""):
            return np.nan
        try:
            return float(v)
        except ValueError:
            raise self.err(no, f"dimension {d}, value {k}: {v[:20]!r} is not a number") from None


def _split_outside_parens(text: str, sep: str) -> list[str]:
    """Split on `sep` where it is not inside (...): timestamps such as 2007-01-01 00:00:00 hold ':'."""
    out, depth, cur = [], 0, []
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _parse_time(text: str, err) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()  # "Z" parses only from 3.11
    except ValueError:
        raise err(f"timestamp {text!r} is neither a number nor an ISO date") from None


def load(src: Path, test: Path | None, opts) -> Parsed:
    files = [(TsFile(src), None)] + ([(TsFile(test), "test")] if test else [])
    first = files[0][0]
    n_dims = {len(series) for f, _ in files for series, _, _ in f.cases}
    if len(n_dims) != 1:
        raise DataError(f"{src}: cases have different numbers of dimensions {sorted(n_dims)}")
    C = n_dims.pop()
    if first.class_labels is not None:
        labels = list(first.class_labels)
        for f, _ in files[1:]:
            extra = [lab for lab in (f.class_labels or []) if lab not in labels]
            labels += extra
        task = TaskSpec("class", "classification", labels)
    elif first.regression:
        task = TaskSpec("target", "regression", targets=["target"])
    else:
        raise DataError(f"{src}: no @classLabel true or @targetLabel true: nothing to learn", hint="an unlabelled .ts file cannot be imported")
    rate = opts.rate or 1.0
    cases = []  # (times[N] | None, values[N, C], label, split, file, line)
    for f, split in files:
        if f.class_labels is None and task.type == "classification" or f.regression != (task.type == "regression"):
            raise DataError(f"{f.path}: its labels do not match {src}'s (@classLabel/@targetLabel differ)")
        for series, label, no in f.cases:
            lengths = {len(v) for _, v in series}
            if len(lengths) != 1:
                raise f.err(no, f"dimensions have different lengths {sorted(lengths)}")
            values = np.stack([v for _, v in series], axis=1)  # (N, C)
            times = series[0][0]
            cases.append((times, values, label, split, f.path, no))
    lengths = [len(v) for _, v, *_ in cases]
    n_min, n_max = min(lengths), max(lengths)
    meta = {"source": str(src), "test_source": str(test) if test else None, "rate_hz": rate, "format": "ts",
            "problem": first.header.get("problemname", src.stem), "lengths": [n_min, n_max], "unequal": None}
    if n_min != n_max:
        if opts.unequal not in ("pad", "truncate"):
            raise DataError(f"--unequal must be pad or truncate, got {opts.unequal!r}")
        meta["unequal"] = opts.unequal
        if opts.unequal == "truncate":
            meta["samples_dropped"] = int(sum(lengths) - n_min * len(lengths))
            n_max = n_min
    sessions = []
    for i, (times, values, label, split, path, no) in enumerate(cases):
        values = values[:n_max]
        if times is not None:  # timestamped: relative to the case's first stamp
            t = times[:n_max] - times[0]
            if np.any(np.diff(t) < 0):
                raise DataError(f"{path}:{no}: timestamps go backwards")
        else:
            t = right_aligned_times(len(values), n_max, rate)
        ok = ~np.isnan(values).any(axis=1)  # a sample with any missing channel is dropped
        stream = Stream(t[ok], values[ok].astype(np.float32))
        sid = session_id(split or "train", i)
        lab = label if task.type == "classification" else float(label)
        sessions.append((Session(sid, {opts.modality or "series": stream}, {task.name: lab}, [], {"line": no, "file": path.name}), split))
    if first.timestamps:  # the rate follows from the stamps
        diffs = np.concatenate([np.diff(s.streams[opts.modality or "series"].t) for s, _ in sessions])
        diffs = diffs[diffs > 0]
        rate = opts.rate or (1.0 / float(np.median(diffs)) if diffs.size else 1.0)
        meta["rate_hz"] = rate
    # A padded short series leaves a gap at the window's front by design: coverage alone decides presence.
    timeout = n_max / rate if meta["unequal"] == "pad" else 0.0
    sensor = SensorSpec(opts.modality or "series", "timeseries", float(rate), C, timeout_s=timeout)
    window = whole_series_window(n_min if meta["unequal"] != "truncate" else n_max, n_max, rate)
    if opts.window_s:
        from edge_gmm.config import WindowSpec

        window = WindowSpec(opts.window_s, opts.hop_s or opts.window_s / 2)
    return Parsed(meta["problem"], [sensor], [task], window, sessions, meta)
