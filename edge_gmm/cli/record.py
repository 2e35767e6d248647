"""`edge-gmm record --sources URL[,URL] --out DATASET`: capture live MCU sensors into a dataset."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from edge_gmm.cli.common import add_json, emit, progress
from edge_gmm.errors import ConfigError


def configure(p) -> None:
    p.add_argument("--sources", required=True,
                   help="comma-separated serial links: device path, pty path, socket://HOST:PORT (serial:// prefix allowed)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--seconds", type=float, default=None, help="record N seconds (default: until Ctrl-C)")
    p.add_argument("--label", action="append", default=[], metavar="TASK=LABEL", help="a label for the whole session (repeatable)")
    p.add_argument("--labels", default=None, metavar="CSV", help="label track: start,end,label[,task] seconds from the start")
    p.add_argument("--classes", action="append", default=[], metavar="TASK=A,B,...", help="all classes of a task")
    p.add_argument("--session-id", default=None, help="default: rec-YYYYmmdd-HHMMSS")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--name", default="recording", help="dataset name (new datasets)")
    p.add_argument("--append", action="store_true", help="add this session to an existing dataset at --out")
    p.add_argument("--force", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--format", choices=("frames", "ei-forwarder"), default="frames")
    p.add_argument("--frequency", type=float, default=None, help="ei-forwarder: sample rate in Hz (default: detect)")
    p.add_argument("--wait", action="store_true", help="wait for ports to appear instead of failing")
    add_json(p)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {item!r}: expected TASK=VALUE")
        out[key.strip()] = value.strip()
    return out


def run(args) -> int:
    from edge_gmm.firmware_bridge.recording import capture, read_label_track, write_recording
    from edge_gmm.firmware_bridge.source import open_bridge

    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError("--seconds must be > 0")
    labels = _pairs(args.label, "--label")
    classes = {k: [c.strip() for c in v.split(",") if c.strip()] for k, v in _pairs(args.classes, "--classes").items()}
    segments = read_label_track(args.labels) if args.labels else []
    urls = [u.strip() for u in args.sources.split(",") if u.strip()]
    if not urls:
        raise ConfigError("--sources is empty")
    sid = args.session_id or datetime.now(timezone.utc).strftime("rec-%Y%m%d-%H%M%S")
    readers = [open_bridge(u, format=args.format, frequency=args.frequency, wait_for_port=args.wait) for u in urls]
    started = []
    try:
        for r in readers:
            started.append(r.start())
        bar = progress(total=int(args.seconds) if args.seconds else None, desc="recording", unit="s")
        done = [0]

        def tick(elapsed: float) -> None:
            if int(elapsed) > done[0]:
                bar.update(int(elapsed) - done[0])
                done[0] = int(elapsed)

        streams, sensors, _ = capture(started, args.seconds, tick)
        bar.close()
        link_stats = {u: {k: r.stats()[k] for k in ("frames", "crc_errors", "gaps", "resyncs")} for u, r in zip(urls, started)}
    finally:
        for r in started:
            r.stop()
    t = time.time()
    ds = write_recording(args.out, streams, sensors, labels=labels, segments=segments, classes=classes,
                         session_id=sid, split=args.split, name=args.name, append=args.append,
                         overwrite=args.force, meta={"sources": urls, "recorded_at": t, "link": link_stats})
    result = {
        "out": str(args.out),
        "session": sid,
        "sessions": len(ds.session_ids()),
        "streams": {n: {"samples": len(s), "seconds": round(s.end - s.start, 3) if len(s) else 0.0} for n, s in streams.items()},
        "link": link_stats,
    }
    lines = [f"wrote session {sid} to {args.out} ({result['sessions']} sessions)"]
    lines += [f"  {n}: {v['samples']} samples over {v['seconds']} s" for n, v in result["streams"].items()]
    emit(args, result, "\n".join(lines))
    return 0
