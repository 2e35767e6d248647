"""Data layer figures: machine-health build time and size, windowing speed (offline and streaming), and the
designed single-modality ceiling checked with a quick feature + random-forest probe.

    .venv/bin/python benchmarks/bench_data.py            # default dataset size (~30-60 s on 2 cores)
    .venv/bin/python benchmarks/bench_data.py --small    # 3 sessions per class, 10 s each (a few seconds)
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import md_table, publish  # noqa: E402
from edge_gmm.data import synth  # noqa: E402
from edge_gmm.data.format import SensorChunk  # noqa: E402
from edge_gmm.data.windowing import StreamingAssembler, make_windows  # noqa: E402

MODS = ["imu", "audio", "camera", "env"]


def features(w) -> dict[str, np.ndarray]:
    """Small hand-made features per modality; a masked modality reads as a constant -99."""
    spec = np.abs(np.fft.rfft(w.inputs["audio"], axis=1)) ** 2  # (W, 8001)
    cam = w.inputs["camera"]
    f = {
        "imu": np.log(w.inputs["imu"].std(axis=2) + 1e-3),
        "audio": np.log(spec[:, 1:8001].reshape(len(spec), 16, -1).mean(-1) + 1e-9),
        "camera": cam.reshape(len(cam), 3, 4, cam.shape[2] // 4, 4, cam.shape[3] // 4).mean((3, 5)).reshape(len(cam), -1),
        "env": w.inputs["env"].mean(axis=2),
    }
    return {m: np.where(w.mask[:, [MODS.index(m)]] > 0, v, -99.0) for m, v in f.items()}


def designed_ceiling(combo) -> float:
    """Balanced classes, Bayes-optimal: distinct signature patterns over the combo / number of classes."""
    pats = {frozenset(set(s) & set(combo)) for s in synth.MACHINE_SIGNATURES.values()}
    return len(pats) / len(synth.MACHINE_SIGNATURES)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    spc, secs = (3, 10.0) if args.small else (20, 10.0)  # the synth default
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mh"
        t0 = time.perf_counter()
        ds = synth.synthesize("machine-health", out, seed=0, sessions_per_class=spc, session_seconds=secs)
        t_synth = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        t0 = time.perf_counter()
        w = make_windows(ds, None)
        t_win = time.perf_counter() - t0
        counts = {sp: len(make_windows(ds, sp)) for sp in ds.splits}

        s = ds.load_session(ds.session_ids("test")[0])
        chunks = []
        for name, st in s.streams.items():  # 20 ms chunks, as a live loop would see them
            edges = np.searchsorted(st.t, np.arange(0, st.t[-1] + 0.02, 0.02))
            chunks += [SensorChunk(name, st.t[a:b], st.x[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
        chunks.sort(key=lambda c: c.t[-1])
        asm = StreamingAssembler(ds.sensors, ds.window)
        t0 = time.perf_counter()
        n = 0
        for c in chunks:
            asm.push(c)
            n += len(asm.pop_ready())
        n += len(asm.flush())
        t_stream = (time.perf_counter() - t0) / max(n, 1)

        feats = features(w)
        y = w.labels["state"]
        groups = np.array([hash(sid) % 2**31 for sid in w.session])
        rows = []
        for r in (1, 2, 3, 4):
            for combo in itertools.combinations(MODS, r):
                X = np.concatenate([feats[m] for m in combo], axis=1)
                clf = RandomForestClassifier(100, min_samples_leaf=3, random_state=0, n_jobs=1)
                acc = cross_val_score(clf, X, y, groups=groups, cv=StratifiedGroupKFold(4, shuffle=True, random_state=0)).mean()
                rows.append({"modalities": "+".join(combo), "designed ceiling": designed_ceiling(combo), "probe accuracy": float(acc)})

    size_rows = [
        {"figure": "sessions per class x seconds", "value": f"{spc} x {secs:g}"},
        {"figure": "windows train/val/test", "value": "/".join(str(counts.get(k, 0)) for k in ("train", "val", "test"))},
        {"figure": "synthesize + write (s)", "value": round(t_synth, 2)},
        {"figure": "size on disk (MB)", "value": round(size_mb, 1)},
        {"figure": "make_windows, all splits (s)", "value": round(t_win, 2)},
        {"figure": "streaming assembler, 20 ms chunks (ms/window)", "value": round(t_stream * 1e3, 3)},
    ]
    cmd = "python benchmarks/bench_data.py" + (" --small" if args.small else "")
    publish("data-machine-health", "machine-health dataset: size and windowing speed", cmd, md_table(size_rows))
    publish("data-ceiling", "machine-health: designed single-modality ceiling vs a feature probe", cmd, md_table(rows),
            notes="Probe: random forest on small per-modality features, 4-fold cross-validation grouped by session. "
                  "Designed ceiling = distinct fault-signature patterns visible to the modalities / 5 classes.")


if __name__ == "__main__":
    main()
