"""Dataset summary (sessions, durations, class counts, per-modality coverage and outages) and a PNG of one
session with every modality stacked on a shared time axis. Plotting imports matplotlib lazily (Agg)."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge_gmm.config import SensorSpec, WindowSpec, to_dict
from edge_gmm.data.format import Dataset, Session
from edge_gmm.data.windowing import covered_until, first_k, model_shape, window_session
from edge_gmm.errors import DataError, MissingDependencyError


def outages(sensor: SensorSpec, t: np.ndarray, start: float, end: float) -> list[tuple[float, float]]:
    """Spans longer than the sensor's stale_after_s without a sample, including before the first and after the last."""
    if t.size == 0:
        return [(start, end)]
    edges = np.concatenate(([start], t, [end]))
    gaps = np.diff(edges)
    idx = np.flatnonzero(gaps > sensor.stale_after_s)
    return [(float(edges[i]), float(edges[i + 1])) for i in idx]


def span(ds: Dataset, s: Session) -> tuple[float, float]:
    """(start, end) of a session; the end reaches one sample period past the newest sample (as windowing counts)."""
    spec = {x.name: x for x in ds.sensors}
    present = [(name, st) for name, st in s.streams.items() if len(st)]
    if not present:
        return 0.0, 0.0
    start = min(float(st.t[0]) for _, st in present)
    return start, max(covered_until(spec[name], st.t[-1]) for name, st in present)


def window_bytes(ds: Dataset, s: Session, window: WindowSpec) -> tuple[int, dict[str, int]]:
    """About (windows, float32 bytes per modality) that window_session allocates for `s`, from the declared
    shapes alone: a modality a session lacks still gets zeros in every window. Window ends are k * hop."""
    covered = [covered_until(spec, s.streams[spec.name].t[-1]) for spec in ds.sensors if len(s.streams.get(spec.name, ()))]
    n = max(0, math.floor(max(covered) / window.hop_s) + 1 - first_k(window)) if covered else 0
    return n, {spec.name: n * 4 * math.prod(model_shape(spec, window)) for spec in ds.sensors}


def check_window_bytes(ds: Dataset, s: Session, window: WindowSpec, limit: int | None = None) -> None:
    """DataError, before anything is allocated, when the windows of `s` would not fit in memory: a manifest
    that declares a 100000x100000 camera, or a timestamp years after the others, is not a dataset to summarize."""
    limit = limit or _memory_budget()
    n, sizes = window_bytes(ds, s, window)
    if sum(sizes.values()) <= limit:
        return
    big = max(sizes, key=sizes.get)
    files = sum(f.stat().st_size for f in (ds.path / "sessions" / s.id).glob("*.npy"))
    spec = ds.sensor(big)
    raise DataError(f"{ds.path}: session {s.id!r} would need {_size(sum(sizes.values()))} for {n} windows "
                    f"({big!r}, {spec.kind} of sample shape {list(spec.sample_shape)} at {spec.rate:g} Hz: {_size(sizes[big])}), "
                    f"more than half this machine's memory ({_size(limit)}), from files of {_size(files)}",
                    hint="the manifest's sensor shapes or the session's timestamps are wrong")


def _memory_budget() -> int:
    """Half the physical memory (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024


def summarize(ds: Dataset, window: WindowSpec | None = None) -> dict[str, Any]:
    """Figures a user checks before training. Loads one session at a time."""
    window = window or ds.window or WindowSpec()
    per_mod = {s.name: {"windows_present": 0, "outages": 0, "outage_s": 0.0, "sessions_without": 0} for s in ds.sensors}
    classes = {t.name: {} for t in ds.tasks if t.type != "regression"}
    windows, durations, n_windows = Counter(), [], 0
    for split in ds.splits:
        for sid in ds.session_ids(split):
            s = ds.load_session(sid)
            start, end = span(ds, s)
            durations.append(end - start)
            check_window_bytes(ds, s, window)
            w = window_session(s, ds.sensors, window, ds.tasks)
            windows[split] += len(w)
            n_windows += len(w)
            for j, spec in enumerate(ds.sensors):
                m = per_mod[spec.name]
                m["windows_present"] += int(w.mask[:, j].sum())
                st = s.streams.get(spec.name)
                if st is None or not len(st):
                    m["sessions_without"] += 1
                    continue
                gaps = outages(spec, np.asarray(st.t), start, end)
                m["outages"] += len(gaps)
                m["outage_s"] += sum(b - a for a, b in gaps)
            for task, counts in classes.items():
                labels = ds.task(task).labels
                per = counts.setdefault(split, {"sessions": Counter(), "windows": Counter()})
                if task in s.labels:
                    per["sessions"][s.labels[task]] += 1
                for v in w.labels[task]:
                    per["windows"][labels[v] if v >= 0 else "(none)"] += 1
    for spec in ds.sensors:
        m = per_mod[spec.name]
        m["coverage"] = round(m.pop("windows_present") / n_windows, 4) if n_windows else 0.0
        m["outage_s"] = round(m["outage_s"], 2)
    return {
        "path": str(ds.path),
        "name": ds.name,
        "sensors": [to_dict(s) for s in ds.sensors],
        "tasks": [to_dict(t) for t in ds.tasks],
        "window": to_dict(window),
        "sessions": {k: len(v) for k, v in ds.splits.items()},
        "windows": dict(windows),
        "duration_s": {
            "total": round(float(np.sum(durations)), 2),
            "min": round(float(np.min(durations)), 2),
            "mean": round(float(np.mean(durations)), 2),
            "max": round(float(np.max(durations)), 2),
        },
        "classes": {t: {sp: {k: dict(v) for k, v in d.items()} for sp, d in per.items()} for t, per in classes.items()},
        "modalities": per_mod,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"dataset {s['name']}  ({s['path']})"]
    lines.append("  sessions: " + ", ".join(f"{k} {v}" for k, v in s["sessions"].items())
                 + f"   windows ({s['window']['length_s']} s / hop {s['window']['hop_s']} s): " + ", ".join(f"{k} {v}" for k, v in s["windows"].items()))
    d = s["duration_s"]
    lines.append(f"  duration: {d['total']} s in all; per session min {d['min']} / mean {d['mean']} / max {d['max']} s")
    lines.append("  modalities:")
    for sen in s["sensors"]:
        m = s["modalities"][sen["name"]]
        shape = f"{sen['height']}x{sen['width']} RGB" if sen["kind"] == "camera" else f"{sen['channels']} ch"
        lines.append(f"    {sen['name']:<10} {sen['kind']:<10} {sen['rate']:>8g} Hz  {shape:<10} coverage {m['coverage']:.1%}  "
                     f"outages {m['outages']} ({m['outage_s']} s)" + (f", absent in {m['sessions_without']} sessions" if m["sessions_without"] else ""))
    for task, per in s["classes"].items():
        lines.append(f"  task {task} (windows per class):")
        labels = [t["labels"] for t in s["tasks"] if t["name"] == task][0] + ["(none)"]
        for split, counts in per.items():
            row = ", ".join(f"{lab} {counts['windows'][lab]}" for lab in labels if counts["windows"].get(lab))
            lines.append(f"    {split:<6} {row}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def plot_session(ds: Dataset, sid: str | None, out: str | Path) -> Path:
    """All modalities of one session stacked on a shared time axis; outages shaded red."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("plotting needs matplotlib", hint="pip install matplotlib") from None
    sid = sid or _default_session(ds)
    s = ds.load_session(sid)
    rows = [(spec, part) for spec in ds.sensors for part in _parts(spec)]
    heights = [1.0 if spec.kind == "camera" else 1.4 if spec.kind == "audio" else 1.1 for spec, _ in rows]
    fig, axes = plt.subplots(len(rows), 1, sharex=True, figsize=(11, 1.0 + 1.25 * sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False)
    start, end = span(ds, s)
    for ax, (spec, part) in zip(axes[:, 0], rows):
        st = s.streams.get(spec.name)
        if st is None or not len(st):
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
        else:
            _draw(ax, spec, part, np.asarray(st.t), np.asarray(st.x), start, end)
            for a, b in outages(spec, np.asarray(st.t), start, end):
                ax.axvspan(a, b, color="tab:red", alpha=0.15, lw=0)
        ax.set_ylabel(part[0], rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("time on the session's host clock (s)")
    axes[-1, 0].set_xlim(start, end)
    labels = ", ".join(f"{k}={v}" for k, v in s.labels.items())
    fig.suptitle(f"{ds.name} / {sid}  ({labels})   red = outage (no samples for longer than the sensor's stale_after_s)", fontsize=10)
    for seg in s.segments:
        axes[0, 0].axvspan(seg.start, seg.end, ymin=0.92, ymax=1.0, color="tab:green", alpha=0.4, lw=0)
        axes[0, 0].text((seg.start + seg.end) / 2, 1.0, str(seg.label), transform=axes[0, 0].get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _default_session(ds: Dataset) -> str:
    """A session that shows something: the first whose label is not its task's first (often 'normal')."""
    ids = ds.session_ids()
    if not ids:
        raise DataError(f"{ds.path}: no sessions")
    first = {t.name: t.labels[0] for t in ds.tasks if t.labels}
    for sid in ids:
        labels = ds.sessions[sid].get("labels") or {}
        if any(first.get(k) not in (None, v) for k, v in labels.items()):
            return sid
    return ids[0]


def _parts(spec: SensorSpec) -> list[tuple[str, slice]]:
    """Rows of the plot for one modality: (label, channel slice)."""
    if spec.kind in ("audio", "camera"):
        return [(spec.name if spec.name == spec.kind else f"{spec.name}\n{spec.kind}", slice(None))]
    if spec.kind == "imu" and spec.channels == 6:
        return [(f"{spec.name}\naccel", slice(0, 3)), (f"{spec.name}\ngyro", slice(3, 6))]
    if spec.channels <= 3:
        return [(f"{spec.name}\n{_unit(spec, i) or f'ch{i}'}", slice(i, i + 1)) for i in range(spec.channels)]
    return [(spec.name, slice(None))]


def _unit(spec: SensorSpec, i: int) -> str:
    return spec.units[i] if i < len(spec.units) else ""


def _draw(ax, spec: SensorSpec, part, t, x, start, end) -> None:
    _, sl = part
    if spec.kind == "audio":
        if spec.rate >= 2000:
            nfft = 512 if spec.rate >= 8000 else 256
            ax.specgram(x, NFFT=nfft, Fs=spec.rate, noverlap=nfft // 2, xextent=(t[0], t[-1]), cmap="magma", scale="dB")
            ax.set_ylim(0, spec.rate / 2)
        else:
            ax.plot(t, x, lw=0.5)
        return
    if spec.kind == "camera":
        n = 16  # thumbnails in even slots; each shows the newest frame by its slot's end (none during an outage)
        width = (end - start) / n
        shown = -1
        for k in range(n):
            a = start + k * width
            i = int(np.searchsorted(t, a + width, side="right")) - 1  # newest frame by the slot's end
            if i > shown and a + width - t[i] <= spec.stale_after_s:  # each frame once
                shown = i
                ax.imshow(np.clip(x[i], 0, 1), extent=(a, a + 0.94 * width, 0, 1), aspect="auto", interpolation="nearest")
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        return
    data = x[:, sl].astype(np.float64)
    # break the lines across outages instead of drawing straight segments over them
    cut = np.flatnonzero(np.diff(t) > spec.stale_after_s) + 1
    t = np.insert(t.astype(np.float64), cut, np.nan)
    data = np.insert(data, cut, np.nan, axis=0)
    names = ["x", "y", "z"] if spec.kind == "imu" and data.shape[1] == 3 else [f"ch{i}" for i in range(data.shape[1])]
    for c in range(data.shape[1]):
        ax.plot(t, data[:, c], lw=0.6, label=names[c] if data.shape[1] > 1 else None)
    if data.shape[1] > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
