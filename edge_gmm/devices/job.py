"""The whole device job behind `edge-gmm run`: verify the bundle, open runners, sources and broker, run the Loop.

`run_device(RunSettings)` returns the loop's summary (its `exit_code` is what `run` exits with). The Loop
itself (threads, queues, sensor states, fault counting) is in loop.py; this module only opens and closes
what it needs, in an order that makes every user error fail before the broker is contacted.

Which graphs run (`inference_mode`): streaming — the bundle's encoder graphs per token and its fusion graph at
`rate` predictions per second (devices/window_makers.py) — where the bundle has the streaming split and the
runner is ONNX Runtime or TensorRT; else, or with `whole_window`, the whole-window graph once per hop.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

from edge_gmm.devices.loop import Loop, LoopOptions
from edge_gmm.devices.postprocess import PostProcessor
from edge_gmm.devices.sources import HostClock

log = logging.getLogger(__name__)


@dataclass
class RunSettings:
    """What `edge-gmm run` takes (keyword-only, parsed once by the CLI)."""

    bundle: str
    sources: str
    mqtt: str  # broker URL, 'embedded', or 'none' (no publishing: a dry run)
    device_id: str
    max_seconds: float = 0.0
    max_windows: int = 0
    speed: float = 1.0
    runner: str = "auto"  # auto = tensorrt where importable, else onnxrt
    precision: str | None = None  # None = the bundle's target precision
    threads: int = 0  # onnxrt intra-op threads; 0 = its default
    spool_dir: str | None = None
    password_file: str | None = None
    pubkey: str | None = None  # verify the bundle's ed25519 signature with this key
    queue_windows: int = 8
    metrics_every_s: float = 10.0
    spool_max_mb: float = 64.0  # the spool's byte cap (it also leaves the disk's free space alone)
    ha_discovery: str = "off"  # off | on (retained Home Assistant discovery configs) | remove (clear them, exit)
    rate: float | None = None  # streaming predictions per second; None = one per window hop
    whole_window: bool = False  # run the whole-window graph every hop, not the streaming split


RUNNER_PREFERENCE = (("tensorrt", "tensorrt"), ("onnxrt", "onnxruntime"))  # (runner, module it needs), best first


def runner_candidates(requested: str) -> list[str]:
    """`auto` → every runner whose engine is importable here, best first (TensorRT on a Jetson); else just that one."""
    if requested != "auto":
        return [requested]
    import importlib.util

    found = [name for name, module in RUNNER_PREFERENCE if importlib.util.find_spec(module) is not None]
    if not found:
        from edge_gmm.errors import MissingDependencyError

        raise MissingDependencyError("no inference engine: neither TensorRT nor onnxruntime is installed",
                                     hint="pip install 'edge-gmm[device]'")
    return found


STREAM_RUNNERS = ("onnxrt", "tensorrt")  # runners that run the streaming split (torch runs the whole window)


def _open_first(requested: str, make: Callable[[str], Any], stack) -> tuple[str, Any]:
    """The first candidate runner kind whose `make(name)` (a runner or StreamGraphs) enters. With `auto`, a
    backend whose engine imports but cannot start (TensorRT without cuda-python, say) is skipped with a
    warning; a runner named by the user must work."""
    from edge_gmm.errors import MissingDependencyError

    candidates = runner_candidates(requested)
    for i, name in enumerate(candidates):
        opened = make(name)
        try:
            stack.enter_context(opened)
        except MissingDependencyError as e:
            if requested != "auto" or i == len(candidates) - 1:
                raise
            log.warning("runner %s unavailable (%s); trying %s", name, str(e).splitlines()[0], candidates[i + 1])
            continue
        return name, opened
    raise AssertionError("unreachable: the last candidate raises")


def open_runner(bundle, requested: str, precision: str | None, threads: int, stack):
    """An active, warmed-up runner of the whole-window graph."""
    from edge_gmm.runtime.runners import create_runner

    def make(name: str):
        options = {"threads": threads} if threads and name in ("onnxrt", "torch") else {}
        return create_runner(name, bundle, precision=precision, **options)

    name, runner = _open_first(requested, make, stack)
    _warm_up(runner)
    return name, runner


def open_stream(bundle, requested: str, precision: str | None, threads: int, stack):
    """Active, warmed-up runners of the streaming split: (runner kind, StreamGraphs)."""
    from edge_gmm.runtime.stream import StreamGraphs

    def make(name: str):
        options = {"threads": threads} if threads and name == "onnxrt" else {}
        return StreamGraphs(bundle, name, precision=precision, **options)

    name, graphs = _open_first(requested, make, stack)
    for runner in graphs.runners():
        _warm_up(runner)
    return name, graphs


def inference_mode(settings: RunSettings, bundle) -> str:
    """"stream" or "whole-window" (module docstring); ConfigError for a --rate that cannot apply."""
    from edge_gmm.errors import ConfigError

    rate = settings.rate
    if rate is not None and settings.whole_window:
        raise ConfigError("--rate sets the streaming prediction rate; --whole-window predicts once per window hop: "
                          "give one of them")
    if rate is not None and not 0 < rate < float("inf"):  # `not <` also refuses NaN
        raise ConfigError(f"--rate must be a positive number of predictions per second, got {rate!r}")
    why_not = _why_not_streaming(settings, bundle)
    if why_not and rate is not None:
        raise ConfigError(f"--rate needs the streaming graphs, but {why_not}")
    if why_not and not settings.whole_window:
        log.info("whole-window inference: %s", why_not)
    return "whole-window" if why_not else "stream"


def _why_not_streaming(settings: RunSettings, bundle) -> str:
    if settings.whole_window:
        return "--whole-window asks for the whole-window graph"
    if bundle.stream is None:
        return f"{bundle.source} was exported without the streaming split (export it again with this edge-gmm)"
    if settings.runner not in ("auto", *STREAM_RUNNERS):
        return f"the {settings.runner} runner runs the whole-window graph only (use onnxrt or tensorrt)"
    return split_lacks(bundle, settings.precision)


def split_lacks(bundle, precision: str | None) -> str:
    """Why the bundle's streaming graphs cannot run at `precision` ("" when they can, or no precision is asked)."""
    if precision:
        lacking = [g for g in bundle.graph_names[1:] if precision not in bundle.graph(g).artifacts]
        if lacking:
            return f"its streaming graph {lacking[0]!r} has no {precision} artifact"
    return ""


def open_inference(settings: RunSettings, bundle, mode: str, stack):
    """(runner kind, the runner the loop's main thread calls, its WindowMaker), all active."""
    from edge_gmm.devices.window_makers import TokenWindows, WholeWindows

    modalities = list(bundle.manifest.get("modalities") or [s.name for s in bundle.sensors])
    if mode == "whole-window":
        name, runner = open_runner(bundle, settings.runner, settings.precision, settings.threads, stack)
        return name, runner, WholeWindows(bundle.window, modalities)
    name, graphs = open_stream(bundle, settings.runner, settings.precision, settings.threads, stack)
    rate = settings.rate if settings.rate is not None else 1.0 / bundle.window.hop_s
    log.info("streaming: %s encoders once per token, the fusion graph at %g predictions/s", name, rate)
    maker = TokenWindows(bundle.window, modalities, graphs.layouts, {m: graphs.encoder(m) for m in modalities},
                         graphs.dim, rate)
    return name, graphs.fusion, maker


def _warm_up(runner) -> None:
    """One inference of zeros, so first-call allocations stay out of the latency figures. A failure here is the
    device's (CUDA, TensorRT, memory): the bundle was verified and the feed is the manifest's own."""
    from edge_gmm.errors import DeviceError, EdgeGmmError, RuntimeFailure

    feed = runner.zeros_feed()
    for name, arr in feed.items():
        if name.startswith("mask_"):  # the fusion graph's per-token masks: every token present
            arr[:] = 1
    try:
        runner.infer(feed)
    except DeviceError as e:
        raise RuntimeFailure(f"{runner.name} runner: warm-up inference failed: {e.args[0] if e.args else e}") from e
    except EdgeGmmError:
        raise
    except Exception as e:
        raise RuntimeFailure(f"{runner.name} runner: warm-up inference failed: {type(e).__name__}: {e}") from e


def run_device(settings: RunSettings, *, on_loop: Callable[["Loop"], None] | None = None) -> dict[str, Any]:
    """Verify the bundle, open runner, sources and broker, run the loop; return its summary.

    Order matters: everything the user can get wrong (bundle bytes, sources file, speed, runner) fails
    before the broker is contacted, so a bad deploy never shows up online.
    """
    from edge_gmm.devices.sources import open_source
    from edge_gmm.devices.sources_file import load_sources
    from edge_gmm.errors import ConfigError
    from edge_gmm.mqtt.payload import prediction_payload
    from edge_gmm.mqtt.topics import check_device_id
    from edge_gmm.runtime.bundle import Bundle

    check_device_id(settings.device_id)
    bundle = Bundle.open(settings.bundle)
    bundle.verify_trusted(settings.pubkey)  # the device's trusted key applies when --pubkey is not given
    sensors, window = bundle.sensors, bundle.window
    modalities = list(bundle.manifest.get("modalities") or [s.name for s in sensors])
    plan = load_sources(settings.sources, sensors)
    if settings.speed != 1.0:
        live = [s.uri for s in plan.specs if s.scheme not in ("replay", "synth")]
        if live:
            raise ConfigError(f"--speed applies to replay:// and synth:// sources only; {live[0]!r} is live")
    if not settings.spool_max_mb > 0 or settings.spool_max_mb == float("inf"):  # `not >` also refuses NaN
        raise ConfigError(f"--spool-max-mb must be a positive number of MiB, got {settings.spool_max_mb!r}")
    mode = inference_mode(settings, bundle)
    broker = None
    if settings.mqtt.lower() != "none":
        from edge_gmm.mqtt.url import parse_mqtt_url

        broker = parse_mqtt_url(settings.mqtt, password_file=settings.password_file)
    ha_configs = _ha_discovery(settings, bundle, modalities, broker)
    if settings.ha_discovery == "remove":
        from edge_gmm.mqtt.ha_discovery import remove_configs

        n = remove_configs(broker, settings.device_id, [t for t, _ in ha_configs])
        return {"reason": "ha-discovery removed", "exit_code": 0, "predictions": 0, "ha_discovery": {"removed": n}}
    post = PostProcessor.from_manifest(bundle.manifest)
    clock = HostClock()
    sources = [open_source(spec, sensors, clock=clock, speed=settings.speed, align_s=window.hop_s) for spec in plan.specs]
    opts = LoopOptions(device_id=settings.device_id, max_seconds=settings.max_seconds, max_windows=settings.max_windows,
                       queue_windows=settings.queue_windows, metrics_every_s=settings.metrics_every_s)
    with contextlib.ExitStack() as stack:
        name, runner, maker = open_inference(settings, bundle, mode, stack)
        from edge_gmm.devices.tegrastats import TegrastatsReader

        telemetry = TegrastatsReader().start()  # does nothing where tegrastats is absent (not a Jetson)
        stack.callback(telemetry.stop)
        model = {"name": bundle.name, "version": str(bundle.manifest["model"].get("version", "")),
                 "precision": runner.precision, "backend": name}
        publisher = None
        if broker is not None:
            from edge_gmm.mqtt.publisher import Publisher

            spool = settings.spool_dir or default_spool_dir(settings.device_id)
            publisher = Publisher(broker, settings.device_id, spool_dir=spool,
                                  spool_max_bytes=int(settings.spool_max_mb * 1024 * 1024),
                                  status_extra={"model": model, "sources": [s.describe() for s in sources]},
                                  ha_discovery=ha_configs)
            publisher.start()
        loop = None
        try:
            loop = Loop(sensors=sensors, window=window, modalities=modalities, runner=runner, post=post,
                        sources=sources, timeouts=plan.timeouts, model=model, options=opts,
                        payload_fn=prediction_payload,
                        publish=publisher.publish_prediction if publisher else None,
                        publish_metrics=publisher.publish_metrics if publisher else None, clock=clock, maker=maker)
            loop.telemetry = telemetry.latest
            if on_loop is not None:
                on_loop(loop)
            summary = loop.run()
            summary["model"] = model
        finally:
            final = _stop_publisher(publisher, loop) if publisher is not None else None
        if final is not None:
            summary["publisher"] = final
    return summary


def _ha_discovery(settings: RunSettings, bundle, modalities: list[str], broker) -> list[tuple[str, bytes]]:
    """The encoded Home Assistant discovery configs (none when off); on/remove need a broker."""
    from edge_gmm.errors import ConfigError
    from edge_gmm.mqtt.ha_discovery import MODES, discovery_configs, encoded_configs

    mode = settings.ha_discovery
    if mode not in MODES:
        raise ConfigError(f"--ha-discovery must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return []
    if broker is None:
        raise ConfigError(f"--ha-discovery {mode} needs a broker: --mqtt none publishes nothing")
    model = {"name": bundle.name, "version": str(bundle.manifest["model"].get("version", ""))}
    tasks = [t["name"] for t in bundle.manifest.get("tasks", [])]
    return encoded_configs(discovery_configs(settings.device_id, model=model, tasks=tasks, modalities=modalities))


def default_spool_dir(device_id: str) -> str:
    """Where predictions wait for the broker: under $XDG_STATE_HOME (survives reboots, unlike /tmp)."""
    import os
    from pathlib import Path

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "edge-gmm" / "spool" / device_id)


def _stop_publisher(publisher, loop: "Loop | None") -> dict[str, Any]:
    """Final metrics and status (kept retained with the offline state), drain, close; the counts at the end."""
    if loop is not None:
        publisher.publish_metrics(loop.metrics())
        publisher.set_status({"stop_reason": loop.stop_reason, "predictions": loop.counts["predictions"]})
    before = publisher.stats()
    publisher.stop()
    after = publisher.stats()  # counts survive stop(); the spool is closed, so its depth comes from before
    after["spooled"] = max(0, before["spooled"] - (after["acked"] - before["acked"]))
    return after
