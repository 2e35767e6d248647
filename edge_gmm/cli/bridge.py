"""`edge-gmm bridge monitor URL` and `edge-gmm bridge emulate --pty|--socket`: watch an MCU link, or be one."""

from __future__ import annotations

import sys
import time

from edge_gmm.cli.common import add_json, emit, table
from edge_gmm.errors import ConfigError

FORMATS = ("frames", "ei-forwarder")


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{monitor,emulate}")

    m = sub.add_parser("monitor", help="live per-sensor rates and error counters of a serial link")
    m.add_argument("url", help="device path (/dev/ttyACM0), pty path, socket://HOST:PORT or loop://")
    m.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    m.add_argument("--format", choices=FORMATS, default="frames", help="binary frames (default) or Edge Impulse forwarder lines")
    m.add_argument("--frequency", type=float, default=None, help="ei-forwarder: sample rate in Hz (default: detect)")
    m.add_argument("--name", default=None, help="ei-forwarder: sensor name (default imu for 3/6/9 values, else forwarder)")
    m.add_argument("--at-commands", action="store_true", help="ei-forwarder: send AT+STARTDATAFWD / AT+STOPDATAFWD")
    m.add_argument("--baud", type=int, default=921600, help="baud rate of a real serial port (default 921600)")
    m.add_argument("--wait", action="store_true", help="wait for the port to appear instead of failing")
    add_json(m)

    e = sub.add_parser("emulate", help="a virtual MCU streaming imu + env frames on a pty or socket")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="create a pseudo-terminal (the default)")
    where.add_argument("--socket", metavar="[HOST:]PORT", default=None, help="listen on TCP instead (socket://HOST:PORT)")
    e.add_argument("--link", default=None, help="make PATH a symlink to the pty (a stable name across unplugs)")
    e.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    e.add_argument("--faults", default="", help="comma-separated: bitflip,drop,garbage,unplug")
    e.add_argument("--fault-rate", type=float, default=0.02, help="fraction of frames hit by a byte fault (default 0.02)")
    e.add_argument("--unplug-every", type=float, default=5.0, help="seconds between simulated unplugs (default 5)")
    e.add_argument("--scenario-label", "--label", dest="label", default="normal", help="machine-health state to simulate")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--dataset", default=None, help="replay a recorded dataset's imu/env instead of the scenario")
    e.add_argument("--session", default=None, help="with --dataset: which session (default: the first)")
    e.add_argument("--format", choices=FORMATS, default="frames", help="frames (default) or Edge Impulse forwarder lines")
    e.add_argument("--clock-start-us", type=int, default=0, help="MCU clock at start (e.g. 4294000000 to see it wrap)")
    add_json(e)


def run(args) -> int:
    return _monitor(args) if args.action == "monitor" else _emulate(args)


# ---------------------------------------------------------------- monitor


def _monitor(args) -> int:
    from edge_gmm.firmware_bridge.source import open_bridge

    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError("--seconds must be > 0")
    reader = open_bridge(args.url, format=args.format, baudrate=args.baud, wait_for_port=args.wait,
                         frequency=args.frequency, name=args.name, at_commands=args.at_commands)
    live = not args.json
    t0 = time.monotonic()
    next_print = t0 + 1.0
    with reader:
        try:
            while args.seconds is None or time.monotonic() - t0 < args.seconds:
                reader.chunks(timeout=0.1)  # drained: the monitor only counts
                if live and time.monotonic() >= next_print:
                    next_print += 1.0
                    print(_live_line(reader, time.monotonic() - t0), flush=True)
        except KeyboardInterrupt:
            pass
        elapsed = time.monotonic() - t0
        result = _summary(args.url, reader, elapsed)
    emit(args, result, _summary_text(result))
    return 0


def _summary(url: str, reader, elapsed: float) -> dict:
    s = reader.stats()
    specs = {x.name: x for x in reader.sensors()}
    sensors = {}
    for name, v in s["sensors"].items():
        spec = specs.get(name)
        sensors[name] = {
            "rate_hz": v["rate_hz"],
            "samples": v["samples"],
            "nominal_rate_hz": spec.rate if spec else None,
            "kind": spec.kind if spec else None,
            "channels": spec.channels if spec else None,
            "units": spec.units if spec else [],
        }
    keys = ("frames", "crc_errors", "malformed", "gaps", "resyncs", "bytes_dropped", "bytes_in", "unsupported",
            "undescribed", "bad_payload", "connects", "disconnects", "queue_dropped", "mcu_overruns", "clock_drift_ppm")
    out = {"url": url, "seconds": round(elapsed, 3), **{k: s[k] for k in keys if k in s}, "sensors": sensors}
    if s.get("last_error"):
        out["last_error"] = s["last_error"]
    return out


def _live_line(reader, elapsed: float) -> str:
    s = reader.stats()
    rates = "  ".join(f"{n} {v['rate_hz']:.1f} Hz" for n, v in s["sensors"].items()) or "no samples yet"
    state = "" if reader.connected() else "  [port away, reconnecting]"
    return (f"{elapsed:6.1f}s  {rates}  | frames {s['frames']}  crc {s['crc_errors']}  malformed {s['malformed']}  "
            f"gaps {s['gaps']}  resyncs {s['resyncs']}  dropped {s['bytes_dropped']} B{state}")


def _summary_text(r: dict) -> str:
    rows = [{"sensor": n, "kind": v["kind"], "channels": v["channels"], "rate_hz": v["rate_hz"],
             "nominal_hz": v["nominal_rate_hz"], "samples": v["samples"]} for n, v in r["sensors"].items()]
    counters = ", ".join(f"{k} {r[k]}" for k in ("frames", "crc_errors", "malformed", "gaps", "resyncs", "bytes_dropped") if k in r)
    return f"{r['url']} for {r['seconds']:.1f} s\n{table(rows)}\n{counters}"


# ---------------------------------------------------------------- emulate


def _emulate(args) -> int:
    import tempfile
    from pathlib import Path

    from edge_gmm.firmware_bridge import emulator
    from edge_gmm.firmware_bridge.faults import FaultInjector, parse_faults
    from edge_gmm.firmware_bridge.transports import PtyTransport, SocketTransport

    kinds = parse_faults(args.faults)
    if not 0 <= args.fault_rate <= 1:
        raise ConfigError("--fault-rate must be in [0, 1]")
    if args.dataset:
        feeds = emulator.dataset_feeds(args.dataset, args.session)
    else:
        feeds = emulator.synthetic_feeds(args.label, args.seed)
    if args.socket is not None:
        host, _, port = args.socket.rpartition(":")
        try:
            transport = SocketTransport(host or "127.0.0.1", int(port))
        except ValueError:
            raise ConfigError(f"--socket {args.socket!r}: expected [HOST:]PORT") from None
        except OSError as e:
            raise ConfigError(f"--socket {args.socket!r}: cannot listen: {e}") from None
    else:
        link = args.link
        if link is None and "unplug" in kinds:  # a pty gets a new path on every replug: give it a stable name
            link = str(Path(tempfile.mkdtemp(prefix="edge-gmm-mcu-")) / "ttyMCU")
        transport = PtyTransport(link)

    def announce(tr) -> None:
        extra = f" -> {tr.path}" if isinstance(tr, PtyTransport) and tr.link else ""
        print(f"virtual MCU port: {tr.port}{extra}", flush=True)

    announce(transport)
    shown = feeds[:1] if args.format == "ei-forwarder" else feeds  # forwarder lines carry one sensor
    names = ", ".join(f"{f.name} ({f.x.shape[1]} ch, {f.rate:g} Hz)" for f in shown)
    print(f"streaming {names} as {args.format}; read it with: edge-gmm bridge monitor {transport.port}"
          + (" --format ei-forwarder" if args.format == "ei-forwarder" else ""), flush=True)
    mcu = emulator.VirtualMcu(
        feeds, transport, faults=FaultInjector(kinds, args.fault_rate, args.seed), clock_start_us=args.clock_start_us,
        text=args.format == "ei-forwarder", unplug_every_s=args.unplug_every,
        on_replug=announce if isinstance(transport, PtyTransport) and not transport.link else None,
    )
    try:
        summary = mcu.run(args.seconds)
    except KeyboardInterrupt:
        summary = mcu.summary()
    finally:
        transport.close()
    emit(args, summary, "sent: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    sys.stdout.flush()
    return 0
