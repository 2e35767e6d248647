"""`edge-gmm run`: on the device, stream sensors through the bundle's model and publish predictions over MQTT.

    edge-gmm run --bundle bundle/ --sources sources.yaml --mqtt mqtt://broker:1883
    edge-gmm run --bundle bundle/ --sources replay://data/machine-health --speed max --mqtt none --json
    edge-gmm run --bundle bundle/ --sources sources.yaml --mqtt mqtt://broker:1883 --rate 10   # 10 predictions/s

Streaming (the default where the bundle has the streaming split, on onnxrt/tensorrt): each modality's encoder
runs once per token as its samples arrive, and the fusion graph runs --rate times a second over the cached
tokens of the last window. --whole-window (and the torch runner) runs the whole-window graph once per hop.

SIGINT/SIGTERM stop it cleanly: the current window finishes, the status goes offline, a final line (or the
--json summary) reports predictions, drops, sensor states and latency.

Exit codes (docs/troubleshooting.md): 0 a clean stop (a signal, --max-seconds/--max-windows, a replay that
finished) · 2 a user or configuration error, never restarted · 75 a runtime failure a restart may cure (assembly
error, inference failing, sources down for good, a CUDA/TensorRT fault) · 1 a bug (with a traceback).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

from edge_gmm.cli.common import add_json, emit


def configure(p) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory or .tar (verified before anything starts)")
    p.add_argument("--sources", required=True,
                   help="sources file (YAML/TOML/JSON: modality -> URI) or one URI, e.g. replay://DATASET, synth://machine-health, serial:///dev/ttyACM0")
    p.add_argument("--mqtt", required=True, help="broker URL (mqtt://host:1883, mqtts://..., embedded) or 'none' for a dry run")
    p.add_argument("--device-id", default=socket.gethostname(), help="device id in topics and payloads (default: hostname)")
    p.add_argument("--max-seconds", type=float, default=0.0, help="stop after this many seconds (default: run until stopped)")
    p.add_argument("--max-windows", type=int, default=0, help="stop after this many predictions")
    p.add_argument("--speed", default="1", help="replay/synth speed: a factor or 'max' (as fast as inference goes, nothing dropped)")
    p.add_argument("--runner", default="auto", choices=["auto", "onnxrt", "tensorrt", "torch"],
                   help="inference backend (auto: TensorRT where importable, else ONNX Runtime)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="artifact to run (default: the bundle's target precision)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own choice)")
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="streaming predictions per second of sensor data, e.g. --rate 10 (default: one per window "
                   "hop, 1/hop_s); needs the bundle's streaming graphs")
    p.add_argument("--whole-window", action="store_true",
                   help="run the whole-window graph once per window hop instead of streaming tokens (no --rate)")
    p.add_argument("--spool-dir", help="on-disk spool: predictions made while the broker is away are sent later, in order "
                   "(default: ~/.local/state/edge-gmm/spool/DEVICE_ID)")
    p.add_argument("--spool-max-mb", type=float, default=64.0,
                   help="most disk space the spool takes, in MiB (default 64); the oldest unsent predictions go first")
    p.add_argument("--password-file", help="broker password from this file instead of the URL")
    p.add_argument("--pubkey", help="verify the bundle's ed25519 signature with this public key")
    p.add_argument("--queue", type=int, default=8, help="windows waiting for inference before the oldest is dropped (raised to the burst a late sensor releases: rate x its timeout + 1)")
    p.add_argument("--metrics-every", type=float, default=10.0, help="seconds between metrics messages")
    p.add_argument("--ha-discovery", default="off", choices=["off", "on", "remove"],
                   help="Home Assistant MQTT discovery: on publishes retained sensor configs (docs/home-assistant.md), "
                   "remove clears them and exits (default off)")
    p.add_argument("--quiet", action="store_true", help="no log lines on stderr (errors still print)")
    add_json(p)


def run(args) -> int:
    from edge_gmm.devices.job import RunSettings, run_device
    from edge_gmm.devices.sources import parse_speed

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="edge-gmm run: %(message)s")
    settings = RunSettings(
        bundle=args.bundle, sources=args.sources, mqtt=args.mqtt, device_id=args.device_id,
        max_seconds=args.max_seconds, max_windows=args.max_windows, speed=parse_speed(args.speed),
        runner=args.runner, precision=args.precision, threads=args.threads, spool_dir=args.spool_dir,
        password_file=args.password_file, pubkey=args.pubkey, queue_windows=args.queue,
        metrics_every_s=args.metrics_every, spool_max_mb=args.spool_max_mb, ha_discovery=args.ha_discovery,
        rate=args.rate, whole_window=args.whole_window)

    def install_signals(loop) -> None:
        def handler(num, _frame):
            if loop.stop_event.is_set():  # a second signal while shutting down: give up waiting
                raise KeyboardInterrupt
            loop.request_stop(signal.Signals(num).name)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_device(settings, on_loop=install_signals)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    emit(args, summary, final_line(summary))
    code = int(summary.get("exit_code", 0))
    if code:  # the summary went out first (--json stays parseable); the error line says why it is not 0
        print(f"edge-gmm run: error: {summary.get('reason')}: {summary.get('error') or 'see the log above'}",
              file=sys.stderr)
    return code


def final_line(s: dict) -> str:
    lat = s.get("latency_ms", {})
    total, infer = lat.get("total", {}), lat.get("infer", {})
    sensors = " ".join(f"{m}={state}" for m, state in s.get("sensors", {}).items())
    pub = s.get("publisher") or {}
    acked = f", {pub.get('acked', 0)} acked, {pub.get('spooled', 0)} spooled" if pub else ""
    return (f"stopped ({s.get('reason') or 'done'}) after {s.get('uptime_s', 0):.1f} s: {s.get('predictions', 0)} predictions"
            f"{acked}, {s.get('dropped_windows', 0)} windows dropped; sensors {sensors or '-'}; "
            f"latency p50/p99 total {total.get('p50', 0):.2f}/{total.get('p99', 0):.2f} ms, "
            f"infer {infer.get('p50', 0):.2f}/{infer.get('p99', 0):.2f} ms{_stream_part(s.get('stream') or {})}")


def _stream_part(st: dict) -> str:
    """Streaming's per-stage cost, for the final line: the rate and encoder ms per second of data."""
    if st.get("mode") != "stream":
        return ""
    enc = sum((st.get("encode_ms_per_s") or {}).values())
    return f"; streaming at {st.get('rate_hz', 0):g} Hz, encoders {enc:.2f} ms per s of data"
