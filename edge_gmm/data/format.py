"""The dataset format on disk (docs/dataset-format.md), readable with numpy + the standard library.

    DIR/manifest.json                      name, sensors, tasks, splits, recommended window, per-session summary
    DIR/sessions/<id>/session.json         labels (per session), segments (labels over time), meta
    DIR/sessions/<id>/<modality>.t.npy     float64[N]   seconds on the session's host clock (0 = session start)
    DIR/sessions/<id>/<modality>.x.npy     float32[N, *sensor.sample_shape]

`DatasetWriter` builds everything in a hidden sibling directory and renames it into place only when the
`with` block ends without an error, and writes manifest.json last: a directory without a manifest is never
a dataset, so an interrupted import leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec, from_dict, to_dict
from edge_gmm.errors import ConfigError, DataError

FORMAT_NAME = "edge-gmm-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Stream:
    """One modality of one session. t: float64[N] (sorted, seconds); x: float32[N, *sample_shape]."""

    t: np.ndarray
    x: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def start(self) -> float:
        return float(self.t[0]) if len(self) else float("nan")

    @property
    def end(self) -> float:
        return float(self.t[-1]) if len(self) else float("nan")


@dataclass
class SensorChunk:
    """What every live source yields: some consecutive samples of one modality (same layout as Stream)."""

    modality: str
    t: np.ndarray  # float64[n], host clock
    x: np.ndarray  # float32[n, *sample_shape]

    def __len__(self) -> int:
        return int(self.t.shape[0])


@dataclass
class Segment:
    """A label over time: `label` holds for task `task` on [start, end) seconds."""

    task: str
    start: float
    end: float
    label: Any  # str for classification / anomaly, float for regression


@dataclass
class Session:
    """One recording. `labels` hold for the whole session; `segments` override them where they exist."""

    id: str
    streams: dict[str, Stream]
    labels: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        spans = [(s.start, s.end) for s in self.streams.values() if len(s)]
        if not spans:
            return 0.0
        return max(e for _, e in spans) - min(b for b, _ in spans)

    @property
    def end(self) -> float:
        ends = [s.end for s in self.streams.values() if len(s)]
        return max(ends) if ends else 0.0


# ---------------------------------------------------------------- reading


class Dataset:
    """A dataset directory opened read-only. Sessions load lazily (`load_session`)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        src = str(path / MANIFEST)
        try:
            self.name: str = manifest["name"]
            self.sensors: list[SensorSpec] = [from_dict(SensorSpec, s, source=src, where="sensors") for s in manifest["sensors"]]
            self.tasks: list[TaskSpec] = [from_dict(TaskSpec, t, source=src, where="tasks") for t in manifest["tasks"]]
            self.splits: dict[str, list[str]] = {k: list(v) for k, v in manifest["splits"].items()}
            self.sessions: dict[str, dict[str, Any]] = manifest["sessions"]
            w = manifest.get("window")
            self.window: WindowSpec | None = from_dict(WindowSpec, w, source=src, where="window") if w else None
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{src}: missing or malformed field {e}") from None
        except ConfigError as e:  # a sensor's rate, a window's length: the manifest is wrong, not a config file
            raise DataError(str(e)) from None
        self.meta: dict[str, Any] = manifest.get("meta", {})

    @classmethod
    def open(cls, path: str | Path) -> "Dataset":
        p = Path(path)
        mf = p / MANIFEST
        if not mf.is_file():
            hint = "build one with 'edge-gmm dataset synth' or 'edge-gmm dataset import'"
            if p.is_dir():
                raise DataError(f"{p}: not a dataset (no {MANIFEST}; an interrupted write leaves none)", hint=hint)
            raise DataError(f"{p}: no such dataset directory", hint=hint)
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise DataError(f"{mf}: cannot read manifest: {e}") from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != FORMAT_NAME:
            raise DataError(f"{mf}: not an edge-gmm dataset manifest (format={fmt!r})")
        if manifest.get("version", 0) > FORMAT_VERSION:
            raise DataError(
                f"{mf}: dataset format version {manifest['version']} is newer than this edge-gmm reads ({FORMAT_VERSION})",
                hint="upgrade edge-gmm",
            )
        return cls(p, manifest)

    def sensor(self, name: str) -> SensorSpec:
        for s in self.sensors:
            if s.name == name:
                return s
        raise DataError(f"{self.path}: no modality {name!r}; it has {', '.join(s.name for s in self.sensors)}")

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise DataError(f"{self.path}: no task {name!r}; it has {', '.join(t.name for t in self.tasks)}")

    def session_ids(self, split: str | None = None) -> list[str]:
        """Session ids of one split (None = all, in split order)."""
        if split is None:
            return [sid for ids in self.splits.values() for sid in ids]
        if split not in self.splits:
            raise DataError(f"{self.path}: no split {split!r}; it has {', '.join(self.splits)}")
        return list(self.splits[split])

    def load_session(self, sid: str, modalities: Iterable[str] | None = None, mmap: bool = False) -> Session:
        if sid not in self.sessions:
            raise DataError(f"{self.path}: no session {sid!r}")
        d = self.path / "sessions" / sid
        info = _read_json(d / "session.json")
        wanted = list(modalities) if modalities is not None else [s.name for s in self.sensors]
        streams = {}
        for name in wanted:
            sensor = self.sensor(name)
            if name not in self.sessions[sid].get("streams", {}):
                continue  # this session never recorded that sensor
            streams[name] = _read_stream(d, sensor, mmap)
        try:
            segments = [Segment(**s) for s in info.get("segments", [])]
        except TypeError as e:
            raise DataError(f"{d / 'session.json'}: malformed segment ({e})") from None
        return Session(sid, streams, dict(info.get("labels", {})), segments, dict(info.get("meta", {})))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"Dataset({self.name!r}, {len(self.sessions)} sessions: {sizes}, modalities={[s.name for s in self.sensors]})"


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{p}: cannot read: {e}") from None


def _read_stream(d: Path, sensor: SensorSpec, mmap: bool) -> Stream:
    """One stream, checked as DatasetWriter checks it: a hand-made or damaged file fails here, naming itself,
    not later as a shape error deep in windowing (or a window loop that never ends on a +inf timestamp)."""
    tp, xp = d / f"{sensor.name}.t.npy", d / f"{sensor.name}.x.npy"
    t, x = _load_npy(tp, mmap), _load_npy(xp, mmap)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.floating):
        raise DataError(f"{tp}: timestamps must be float[N], got {t.dtype}{list(t.shape)}")
    if x.shape[1:] != sensor.sample_shape or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{xp}: samples of {sensor.name!r} must be float[N, {', '.join(map(str, sensor.sample_shape))}], "
                        f"got {x.dtype}{list(x.shape)}")
    if x.shape[0] != t.shape[0]:
        raise DataError(f"{xp}: {x.shape[0]} samples for {t.shape[0]} timestamps in {tp.name}")
    bad = ~np.isfinite(t)
    if bad.any():
        raise DataError(f"{tp}: non-finite timestamp {t[bad.argmax()]} at sample {int(bad.argmax())}")
    back = np.diff(t) < 0
    if back.any():
        raise DataError(f"{tp}: timestamps go backwards at sample {int(back.argmax()) + 1}")
    return Stream(t, x)


def _load_npy(p: Path, mmap: bool) -> np.ndarray:
    # Mapped first: a header claiming more than the file holds fails here ("mmap length is greater than file
    # size") instead of allocating the claimed size, which np.load does before it reads a byte.
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
        return a if mmap else np.array(a)
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read array: {e}") from None


# ---------------------------------------------------------------- writing


class DatasetWriter:
    """Write a dataset atomically: `with DatasetWriter(out, name=..., sensors=..., tasks=...) as w: w.add(session, "train")`.

    Sessions are validated as they are added (shapes, dtypes, sorted finite timestamps, known labels).
    Nothing appears at `path` unless the block completes; `overwrite=True` replaces an existing dataset
    only then.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        sensors: list[SensorSpec],
        tasks: list[TaskSpec],
        window: WindowSpec | None = None,
        meta: dict[str, Any] | None = None,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        self.name = name
        self.sensors = list(sensors)
        self.tasks = list(tasks)
        self.window = window
        self.meta = dict(meta or {})
        self.overwrite = overwrite
        self._by_name = {s.name: s for s in self.sensors}
        self._tasks = {t.name: t for t in self.tasks}
        if len(self._by_name) != len(self.sensors):
            raise DataError(f"{self.path}: duplicate modality names in {[s.name for s in self.sensors]}")
        self.splits: dict[str, list[str]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self._tmp: Path | None = None

    def __enter__(self) -> "DatasetWriter":
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()  # an empty directory is as good as none
        if self.path.exists() and not self.overwrite:
            raise DataError(f"{self.path}: already exists", hint="choose another --out or pass --force to replace it")
        if self.path.exists() and not (self.path / MANIFEST).is_file():
            raise DataError(f"{self.path}: exists and is not a dataset; refusing to replace it", hint="choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        (self._tmp / "sessions").mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._tmp is not None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return False
        try:
            self._finish()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return False

    def add(self, session: Session, split: str = "train") -> None:
        if self._tmp is None:
            raise RuntimeError("DatasetWriter.add outside its with-block")
        if not _SAFE_ID.match(session.id):
            raise DataError(f"session id {session.id!r}: use letters, digits, '.', '_' or '-' (max 128)")
        if session.id in self.sessions:
            raise DataError(f"session id {session.id!r} added twice")
        if split not in SPLITS:
            raise DataError(f"session {session.id!r}: split must be one of {SPLITS}, got {split!r}")
        streams = {name: self._check_stream(session.id, name, s) for name, s in session.streams.items()}
        labels = {task: self._check_label(session.id, task, lab) for task, lab in session.labels.items()}
        segments = []
        for seg in session.segments:
            if not seg.end > seg.start:
                raise DataError(f"session {session.id!r}: segment [{seg.start}, {seg.end}) is empty")
            segments.append(
                {"task": seg.task, "start": float(seg.start), "end": float(seg.end), "label": self._check_label(session.id, seg.task, seg.label)}
            )
        d = self._tmp / "sessions" / session.id
        d.mkdir()
        for name, s in streams.items():
            np.save(d / f"{name}.t.npy", s.t, allow_pickle=False)
            np.save(d / f"{name}.x.npy", s.x, allow_pickle=False)
        info = {"labels": labels, "segments": segments, "meta": session.meta}
        (d / "session.json").write_text(json.dumps(info, indent=1, default=_json_default), encoding="utf-8")
        present = {n: s for n, s in streams.items() if len(s)}
        self.sessions[session.id] = {
            "split": split,
            "start": min((s.start for s in present.values()), default=0.0),
            "end": max((s.end for s in present.values()), default=0.0),
            "labels": labels,
            "segments": len(segments),
            "streams": {n: {"samples": len(s), "start": s.start if len(s) else None, "end": s.end if len(s) else None} for n, s in streams.items()},
        }
        self.splits.setdefault(split, []).append(session.id)

    def _check_stream(self, sid: str, name: str, s: Stream) -> Stream:
        if name not in self._by_name:
            raise DataError(f"session {sid!r}: modality {name!r} is not among the dataset's sensors {list(self._by_name)}")
        spec = self._by_name[name]
        t = np.asarray(s.t, dtype=np.float64)
        x = np.asarray(s.x, dtype=np.float32)
        if t.ndim != 1 or x.shape != (t.shape[0], *spec.sample_shape):
            raise DataError(
                f"session {sid!r}, {name}: expected t[N] and x[N, {', '.join(map(str, spec.sample_shape)) or ''}], "
                f"got t{list(t.shape)} and x{list(x.shape)}"
            )
        if t.size and not np.all(np.isfinite(t)):
            raise DataError(f"session {sid!r}, {name}: non-finite timestamp at sample {int(np.argmin(np.isfinite(t)))}")
        if t.size > 1 and np.any(np.diff(t) < 0):
            raise DataError(f"session {sid!r}, {name}: timestamps go backwards at sample {int(np.argmax(np.diff(t) < 0)) + 1}")
        if x.size and not np.all(np.isfinite(x)):
            raise DataError(f"session {sid!r}, {name}: non-finite value in sample {int(np.argwhere(~np.isfinite(x))[0][0])}")
        return Stream(np.ascontiguousarray(t), np.ascontiguousarray(x))

    def _check_label(self, sid: str, task: str, label: Any) -> Any:
        if task not in self._tasks:
            raise DataError(f"session {sid!r}: task {task!r} is not among the dataset's tasks {list(self._tasks)}")
        spec = self._tasks[task]
        if spec.type == "regression":
            try:
                return float(label)
            except (TypeError, ValueError):
                raise DataError(f"session {sid!r}: task {task!r} needs a number, got {label!r}") from None
        if str(label) not in spec.labels:
            raise DataError(f"session {sid!r}: label {label!r} is not one of task {task!r}'s labels {spec.labels}")
        return str(label)

    def _finish(self) -> None:
        assert self._tmp is not None
        if not self.sessions:
            raise DataError(f"{self.path}: no sessions to write")
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "sensors": [to_dict(s) for s in self.sensors],
            "tasks": [to_dict(t) for t in self.tasks],
            "window": to_dict(self.window) if self.window else None,
            "splits": {k: self.splits[k] for k in SPLITS if k in self.splits},
            "sessions": self.sessions,
            "meta": self.meta,
        }
        text = json.dumps(manifest, indent=1, default=_json_default)
        # The manifest goes last, then a rename: readers never see a dataset with missing sessions.
        (self._tmp / MANIFEST).write_text(text, encoding="utf-8")
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.path, old)
            os.rename(self._tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self._tmp, self.path)


def reassign_splits(ds: Dataset, assignment: dict[str, str]) -> Dataset:
    """Move sessions to other splits (`assignment`: id -> split) by rewriting manifest.json atomically
    (a temporary file renamed over it): a reader sees the old splits or the new ones, never a mix."""
    manifest = json.loads(json.dumps(ds.manifest))  # a copy: `ds` stays as it was opened
    for sid, split in assignment.items():
        if sid not in manifest["sessions"]:
            raise DataError(f"{ds.path}: no session {sid!r}")
        if split not in SPLITS:
            raise DataError(f"session {sid!r}: split must be one of {SPLITS}, got {split!r}")
        manifest["sessions"][sid]["split"] = split
    order = ds.session_ids()  # keep each split's sessions in the order they were written
    splits = {k: [sid for sid in order if manifest["sessions"][sid]["split"] == k] for k in SPLITS}
    manifest["splits"] = {k: ids for k, ids in splits.items() if ids}
    tmp = ds.path / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp, ds.path / MANIFEST)
    return Dataset.open(ds.path)


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")

