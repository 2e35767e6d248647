"""`edge-gmm dataset synth | build | import | inspect | split`: make, import, look at and split datasets."""

from __future__ import annotations

import time
from pathlib import Path

from edge_gmm.cli.common import add_json, emit, progress


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{synth,build,import,inspect,split}")

    s = sub.add_parser("synth", help="write a synthetic multimodal scenario (machine-health)")
    s.add_argument("--scenario", default="machine-health", help="scenario name (default: machine-health)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sessions-per-class", type=int, default=20, help="sessions per class (default 20)")
    s.add_argument("--session-seconds", type=float, default=10.0, help="length of each session (default 10 s)")
    s.add_argument("--camera-size", type=int, default=32, help="camera frame size in pixels, square (default 32)")
    s.add_argument("--out", default=None, help="dataset directory (default datasets/<scenario>)")
    _common(s)

    b = sub.add_parser("build", help="build a real multimodal dataset: av-digits")
    b.add_argument("name", choices=["av-digits"], help="which dataset")
    b.add_argument("--per-digit", type=int, default=60, help="audio-visual pairs per digit (default 60)")
    b.add_argument("--voices", type=int, default=8, help="espeak-ng voices to speak with (default 8)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default=None, help="dataset directory (default datasets/<name>)")
    _common(b)

    i = sub.add_parser("import", help="import ts | wav-folder | image-folder | csv | edge-impulse data")
    i.add_argument("--format", required=True, choices=["ts", "wav-folder", "image-folder", "csv", "edge-impulse"])
    i.add_argument("src", help="file or folder to import (the training part)")
    i.add_argument("--test", default=None, help="held-out part: the _TEST.ts of a UEA pair, or a second folder")
    i.add_argument("--out", default=None, help="dataset directory (default datasets/<source name>)")
    i.add_argument("--name", default="", help="dataset name (default: from the source)")
    i.add_argument("--rate", type=float, default=0.0, help="sample rate in Hz for formats without one (ts: default 1)")
    i.add_argument("--unequal", choices=["pad", "truncate"], default="pad", help="ts with unequal lengths (default pad)")
    i.add_argument("--window-s", type=float, default=0.0, help="recommended window length (default: per format)")
    i.add_argument("--hop-s", type=float, default=0.0, help="recommended hop (default: half the window)")
    i.add_argument("--image-size", default="", help="image-folder: HxW to resize to (default: first image's size)")
    i.add_argument("--time-column", default="", help="csv: timestamp column (default: timestamp/time/t)")
    i.add_argument("--time-unit", default="s", choices=["s", "ms", "us", "ns"], help="csv: unit of numeric timestamps")
    i.add_argument("--label-column", default="", help="csv: per-row label column (becomes time segments)")
    i.add_argument("--modality", default="", help="name of the imported modality")
    i.add_argument("--hmac-key", default="", help="edge-impulse: verify HMAC-SHA256 signatures with this key")
    i.add_argument("--seed", type=int, default=0, help="seed of the train/val(/test) split")
    i.add_argument("--val-frac", type=float, default=0.15)
    i.add_argument("--test-frac", type=float, default=0.15, help="used when --test is not given")
    _common(i)

    n = sub.add_parser("inspect", help="summary of a dataset and a PNG of one session")
    n.add_argument("dir", help="dataset directory")
    n.add_argument("--session", default=None, help="session to plot (default: the first non-first-class one)")
    n.add_argument("--out", default=None, help="PNG to write (default <dir>.png next to the dataset)")
    n.add_argument("--no-plot", action="store_true", help="summary only")
    add_json(n)

    sp = sub.add_parser("split", help="reassign sessions to train/val/test, stratified by a task's label")
    sp.add_argument("dir", help="dataset directory (its manifest is rewritten in place)")
    sp.add_argument("--val", type=float, default=0.2, help="fraction of each label's sessions for val (default 0.2)")
    sp.add_argument("--test", type=float, default=0.2, help="fraction of each label's sessions for test (default 0.2)")
    sp.add_argument("--stratify", default=None, metavar="TASK", help="task whose labels to stratify by (default: the first classification task)")
    sp.add_argument("--seed", type=int, default=0)
    add_json(sp)


def _common(p) -> None:
    p.add_argument("--force", action="store_true", help="replace an existing dataset at --out")
    add_json(p)


def run(args) -> int:
    return {"synth": _synth, "build": _build, "import": _import, "inspect": _inspect, "split": _split}[args.action](args)


def _report(args, out: Path, seconds: float) -> int:
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.inspect import format_summary, summarize

    summary = summarize(Dataset.open(out))
    summary["build_seconds"] = round(seconds, 2)
    emit(args, summary, format_summary(summary) + f"\n  written in {seconds:.1f} s")
    return 0


def _synth(args) -> int:
    from edge_gmm.data.synth import synthesize

    out = Path(args.out or f"datasets/{args.scenario}")
    t0 = time.perf_counter()
    synthesize(args.scenario, out, seed=args.seed, sessions_per_class=args.sessions_per_class, session_seconds=args.session_seconds,
               overwrite=args.force, progress=progress, camera_size=args.camera_size)
    return _report(args, out, time.perf_counter() - t0)


def _build(args) -> int:
    from edge_gmm.data.avdigits import build_av_digits

    out = Path(args.out or f"datasets/{args.name}")
    t0 = time.perf_counter()
    build_av_digits(out, per_digit=args.per_digit, voices=args.voices, seed=args.seed, overwrite=args.force, progress=progress)
    return _report(args, out, time.perf_counter() - t0)


def _import(args) -> int:
    from edge_gmm.data.importers import ImportOptions, import_dataset

    src = Path(args.src)
    stem = src.name if not src.is_file() else src.stem[:-6] if src.stem.endswith("_TRAIN") else src.stem  # 3.8: no removesuffix
    out = Path(args.out or f"datasets/{stem}")
    opts = ImportOptions(name=args.name, seed=args.seed, val_frac=args.val_frac, test_frac=args.test_frac, rate=args.rate,
                         unequal=args.unequal, window_s=args.window_s, hop_s=args.hop_s, image_size=args.image_size,
                         time_column=args.time_column, time_unit=args.time_unit, label_column=args.label_column,
                         modality=args.modality, hmac_key=args.hmac_key, overwrite=args.force)
    t0 = time.perf_counter()
    import_dataset(args.format, src, out, test=args.test, opts=opts)
    return _report(args, out, time.perf_counter() - t0)


def _inspect(args) -> int:
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.inspect import format_summary, plot_session, summarize

    ds = Dataset.open(args.dir)
    summary = summarize(ds)
    text = format_summary(summary)
    if not args.no_plot:
        png = Path(args.out or f"{str(ds.path).rstrip('/')}.png")
        summary["plot"] = str(plot_session(ds, args.session, png))
        text += f"\n  plot: {png}"
    emit(args, summary, text)
    return 0


def _split(args) -> int:
    from edge_gmm.data.format import Dataset
    from edge_gmm.data.splits import split_dataset

    ds = split_dataset(Dataset.open(args.dir), val_frac=args.val, test_frac=args.test, stratify=args.stratify, seed=args.seed)
    result = {"dir": str(ds.path), "splits": ds.splits}
    emit(args, result, "\n".join([f"split {ds.path}:"] + [f"  {k}: {len(v)} sessions ({', '.join(v)})" for k, v in ds.splits.items()]))
    return 0
