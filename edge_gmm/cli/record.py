"""`edge-gmm record --sources FILE|URI[,URI] --out DATASET`: capture live sensors (MCU, microphone, camera)
into a dataset (docs/recording.md)."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

from edge_gmm.cli.common import add_json, emit, progress
from edge_gmm.errors import ConfigError



def configure(p) -> None:
    p.add_argument("--sources", required=True,
                   help="a sources file as for `run` (modality: URI) or comma-separated URIs: serial device or pty path, "
                        "socket://HOST:PORT, audio://default?rate=16000, camera://0?rate=5&size=96x96, camera://clip.avi, "
                        "or one GStreamer pipeline")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--like", default=None, metavar="BUNDLE_OR_DATASET",
                   help="record microphones and cameras as this bundle's or dataset's sensors (rate, size); "
                        "with --append the dataset at --out is the default")
    p.add_argument("--seconds", type=float, default=None, help="record N seconds (default: until Ctrl-C or a video file ends)")
    p.add_argument("--label", action="append", default=[], metavar="TASK=LABEL", help="a label for the whole session (repeatable)")
    p.add_argument("--labels", default=None, metavar="CSV", help="label track: start,end,label[,task] seconds from the start")
    p.add_argument("--classes", action="append", default=[], metavar="TASK=A,B,...", help="all classes of a task")
    p.add_argument("--session-id", default=None, help="default: rec-YYYYmmdd-HHMMSS")
    p.add_argument("--split", default="train", choices=("train", "val", "test"),
                   help="split of this session (default train; reassign later: edge-gmm dataset split)")
    p.add_argument("--name", default="recording", help="dataset name (new datasets)")
    p.add_argument("--append", action="store_true", help="add this session to an existing dataset at --out")
    p.add_argument("--force", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--format", choices=("frames", "ei-forwarder"), default=None,
                   help="serial links: frames (default) or Edge Impulse forwarder lines; a URI's ?format= wins")
    p.add_argument("--frequency", type=float, default=None, help="ei-forwarder: sample rate in Hz (default: detect)")
    p.add_argument("--wait", action="store_true", help="wait for serial ports to appear instead of failing")
    p.add_argument("--start-timeout", type=float, default=10.0, metavar="S",
                   help="every source must deliver (an MCU describe its sensors) within S seconds of opening (default 10)")
    add_json(p)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {item!r}: expected TASK=VALUE")
        out[key.strip()] = value.strip()
    return out


def _specs(args) -> list:
    """The sources to open: a file's entries, one GStreamer pipeline (it has commas of its own), or a URI list."""
    from edge_gmm.devices.sources.feeds import BRIDGE_SCHEMES
    from edge_gmm.devices.sources_file import looks_like_file, parse_sources

    value = args.sources.strip()
    whole = looks_like_file(value) or "!" in value
    parts = [value] if whole else [u.strip() for u in value.split(",") if u.strip()]
    if not parts:
        raise ConfigError("--sources is empty")
    specs = [spec for part in parts for spec in parse_sources(part).specs]
    for spec in specs:  # --format / --frequency: defaults for serial links that do not say
        if spec.scheme in BRIDGE_SCHEMES:
            for key, value in (("format", args.format), ("frequency", args.frequency)):
                if value is not None:
                    spec.options.setdefault(key, str(value))
    return specs


def _like(args):
    from pathlib import Path

    from edge_gmm.devices.sources.feeds import read_like

    if args.like:
        return read_like(args.like)
    if args.append and Path(args.out).exists():
        return read_like(args.out)  # new sessions keep the dataset's sensors
    return None


def _classes(args, like, labels: dict, segments: list) -> dict[str, list[str]]:
    """--classes, else the classes --like's task of that name has (so one label per session is enough)."""
    classes = {k: [c.strip() for c in v.split(",") if c.strip()] for k, v in _pairs(args.classes, "--classes").items()}
    used = set(labels) | {s.task for s in segments}
    for task in like.tasks if like else []:
        if task.name in used and task.type != "regression":
            classes.setdefault(task.name, list(task.labels))
    return classes


def _stopper(feeds, why: list):
    """capture's stop(): a source that ended (a video file) or failed ends the recording; `why` says which."""
    def stop() -> bool:
        for f in feeds:
            problem = f.failure()
            if problem is not None or f.ended():
                why.append(f"{f.spec.uri}: {problem or 'ended'}")
                return True
        return False

    return stop


def run(args) -> int:
    from edge_gmm.devices.sources.feeds import open_feeds, start_feeds
    from edge_gmm.firmware_bridge.recording import capture, read_label_track, write_recording

    for flag, value in (("--seconds", args.seconds), ("--start-timeout", args.start_timeout)):
        if value is not None and not 0 < value < float("inf"):
            raise ConfigError(f"{flag} must be > 0")
    labels = _pairs(args.label, "--label")
    segments = read_label_track(args.labels) if args.labels else []
    like = _like(args)
    classes = _classes(args, like, labels, segments)
    specs = _specs(args)
    sid = args.session_id or datetime.now(timezone.utc).strftime("rec-%Y%m%d-%H%M%S")
    feeds = open_feeds(specs, like.sensors if like else [], wait_for_port=args.wait)
    defaulted = {m: keys for f in feeds for m, keys in f.defaulted.items()}
    for f in feeds:
        for s in f.sensors() if f.defaulted else []:
            print(f"note: {s.name} ({f.spec.uri}) records at {_spec_text(s)}: defaults for {', '.join(f.defaulted[s.name])} "
                  f"(set them in the URI, e.g. ?rate=, or use --like BUNDLE)", file=sys.stderr)
    why: list[str] = []
    origin = time.monotonic()  # the session's zero on the host clock; --seconds counts once all are ready
    try:
        start_feeds(feeds, args.start_timeout)
        bar = progress(total=int(args.seconds) if args.seconds else None, desc="recording", unit="s")
        done = [0]

        def tick(elapsed: float) -> None:
            if int(elapsed) > done[0]:
                bar.update(int(elapsed) - done[0])
                done[0] = int(elapsed)

        streams, sensors, _ = capture(feeds, args.seconds, tick, stop=_stopper(feeds, why), t_start=origin)
        bar.close()
    finally:
        for f in feeds:
            f.stop()
    link_stats = {f.spec.uri: f.stats() for f in feeds}
    ds = write_recording(args.out, streams, sensors, labels=labels, segments=segments, classes=classes,
                         session_id=sid, split=args.split, name=args.name, append=args.append, overwrite=args.force,
                         window=like.window if like else None,
                         meta={"sources": [s.uri for s in specs], "recorded_at": time.time(), "link": link_stats})
    return _summary(args, sid, ds, streams, sensors, link_stats, defaulted, why)


def _spec_text(s) -> str:
    size = f" {s.height}x{s.width}" if s.kind == "camera" else f" x{s.channels}" if s.kind != "audio" else ""
    return f"{s.rate:g} Hz{size}"


def _summary(args, sid, ds, streams, sensors, link_stats, defaulted, why) -> int:
    by_name = {s.name: s for s in sensors}
    result = {
        "out": str(args.out),
        "session": sid,
        "split": args.split,
        "sessions": len(ds.session_ids()),
        "streams": {n: {"kind": by_name[n].kind, "rate_hz": by_name[n].rate, "sample_shape": list(by_name[n].sample_shape),
                        "samples": len(s), "seconds": round(s.end - s.start, 3) if len(s) else 0.0}
                    for n, s in streams.items()},
        "defaults": defaulted,
        "stopped": why[0] if why else ("Ctrl-C" if args.seconds is None else f"{args.seconds:g} s"),
        "link": link_stats,
    }
    lines = [f"wrote session {sid} ({args.split}) to {args.out} ({result['sessions']} sessions); stopped: {result['stopped']}"]
    lines += [f"  {n}: {v['samples']} samples over {v['seconds']} s ({_spec_text(by_name[n])})" for n, v in result["streams"].items()]
    emit(args, result, "\n".join(lines))
    return 0
