"""`edge-gmm subscribe`: watch fused predictions over MQTT, as a live table, as JSON lines, or on a web page.

Exit codes: 0 when --count predictions arrived (or on Ctrl-C / --timeout without --count), 1 when
--timeout passed before --count was reached, 2 on a user error (bad URL, refused password, no broker).

examples:
  edge-gmm subscribe --mqtt mqtt://broker:1883                 # live table
  edge-gmm subscribe --mqtt mqtt://broker:1883 --web 8080      # live page at http://127.0.0.1:8080/
"""

from __future__ import annotations

import json
import sys
import time

REFRESH_S = 0.5


def configure(p) -> None:
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL",
                   help="broker: mqtt://[user[:pass]@]host[:port], mqtts://...?ca=PEM, or 'embedded' to join the "
                   "embedded broker of 'edge-gmm run --mqtt embedded' on this machine (default %(default)s)")
    p.add_argument("--device", default="+", metavar="ID|+", help="device id, or + for all devices (default)")
    p.add_argument("--password-file", metavar="PATH", help="read the broker password from this file (first line)")
    p.add_argument("--client-id", metavar="ID",
                   help="persistent session under this id: predictions sent while you are away are kept for you")
    p.add_argument("--json", action="store_true", help="print each prediction as one JSON line (for scripts)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N predictions")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S", help="exit after S seconds")
    p.add_argument("--validate", action="store_true", help="check every payload against the JSON Schema")
    p.add_argument("--web", metavar="[HOST:]PORT",
                   help="serve a live web page of the predictions instead of printing them (HOST defaults to "
                   "127.0.0.1, this machine only; 0.0.0.0:PORT exposes it to everyone on the network, unauthenticated; "
                   "PORT 0 picks a free port); the URL is printed on stdout")


def run(args) -> int:
    from edge_gmm.mqtt.subscriber import Subscriber
    from edge_gmm.mqtt.url import parse_mqtt_url

    broker = parse_mqtt_url(args.mqtt, password_file=args.password_file)
    if args.web is not None:
        return _run_web(args, broker)
    live = not args.json and sys.stdout.isatty()
    printer = _limit(_print_json if args.json else _print_line, args.count) if not live else None
    sub = Subscriber(broker, args.device, client_id=args.client_id, validate=args.validate,
                     keep=max(args.count, 1), on_prediction=printer)
    sub.start()
    if not args.json:
        print(f"subscribed to {broker.display()} device {args.device}; Ctrl-C to stop", file=sys.stderr)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    reached = True
    try:
        while True:
            if args.count and sub.wait(args.count, REFRESH_S):
                break
            if not args.count:
                time.sleep(REFRESH_S)
            if live:
                _redraw(sub)
            if deadline is not None and time.monotonic() >= deadline:
                reached = not args.count
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.stop()
    if live:
        _redraw(sub)
    stats = _summary(sub)
    if not reached:
        print(f"timeout: {stats['received']} of {args.count} predictions arrived in {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def _run_web(args, broker) -> int:
    """Serve the live page until Ctrl-C (or --timeout): a WebHub fed by the Subscriber, one HTTP server."""
    from edge_gmm.errors import ConfigError
    from edge_gmm.mqtt.subscriber import Subscriber
    from edge_gmm.mqtt.web import WebHub, WebServer, parse_web_address

    if args.json or args.count:
        raise ConfigError("--web serves a page until Ctrl-C; --json and --count are for scripts",
                          hint="run a second 'edge-gmm subscribe --json' for scripts")
    host, port = parse_web_address(args.web)
    hub = WebHub(broker.display())
    server = WebServer(hub, host, port)  # bind first: a taken port fails before the broker is contacted
    sub = Subscriber(broker, args.device, client_id=args.client_id, validate=args.validate, keep=1,
                     on_message=hub.message, on_connection=hub.connection)
    try:
        sub.start()
        server.start()
        print(server.url, flush=True)
        exposed = " (all interfaces: anyone who can reach this port sees the predictions)" if host == "0.0.0.0" else ""
        print(f"web view of {broker.display()} device {args.device} on {server.url}{exposed}; Ctrl-C to stop",
              file=sys.stderr)
        deadline = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
        while time.monotonic() < deadline:
            time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        pass
    finally:
        sub.stop()
        server.stop()
    _summary(sub)
    return 0


def _summary(sub) -> dict:
    stats = sub.stats()
    print(f"received {stats['received']} predictions from {stats['devices']} device(s): "
          f"{stats['gaps']} missing (gaps), {stats['duplicates']} duplicates, {stats['invalid']} invalid, "
          f"{stats['bad_payloads']} bad payloads", file=sys.stderr)
    return stats


def _limit(fn, count: int):
    """Print no more than `count` predictions (0 = all), so `--count N --json` gives exactly N lines."""
    printed = [0]

    def out(payload, outcome):
        if not count or printed[0] < count:
            printed[0] += 1
            fn(payload, outcome)

    return out


def _print_json(payload, outcome) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _print_line(payload, outcome) -> None:
    note = "" if outcome == "ok" else f"  [{outcome}]"
    print(f"{payload.get('device_id')}  seq {payload.get('seq')}  {_labels(payload)}  {_sensors(payload)}{note}", flush=True)


def _labels(payload) -> str:
    out = []
    for task, r in (payload.get("tasks") or {}).items():
        score = r.get("score")
        out.append(f"{task}={r.get('label') or '-'}" + (f" ({score:.2f})" if isinstance(score, (int, float)) else ""))
    return " ".join(out)


def _sensors(payload) -> str:
    return " ".join(f"{m}:{s}" for m, s in (payload.get("sensors") or {}).items())


def _rows(sub) -> list[dict]:
    rows = []
    for dev_id, v in sorted(sub.devices().items()):
        p = v.last or {}
        lat = (p.get("latency_ms") or {})
        total = lat.get("total", sum(x for x in lat.values() if isinstance(x, (int, float))) if lat else None)
        rows.append({
            "device": dev_id,
            "status": (v.status or {}).get("state", "?"),
            "seq": p.get("seq", "-"),
            "prediction": _labels(p) or "-",
            "sensors": _sensors(p) or "-",
            "latency ms": f"{total:.1f}" if isinstance(total, (int, float)) else "-",
            "age s": f"{time.time() - v.received_at:.1f}" if v.received_at else "-",
            "gaps": v.seq.gaps,
            "dups": v.seq.duplicates,
        })
    return rows


def _redraw(sub) -> None:
    from edge_gmm.cli.common import table

    stats = sub.stats()
    head = f"{stats['received']} predictions · {stats['gaps']} missing · {stats['duplicates']} duplicates"
    sys.stdout.write("\x1b[H\x1b[2J" + head + "\n\n" + table(_rows(sub)) + "\n")
    sys.stdout.flush()
