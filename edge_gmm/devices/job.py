"""The whole device job behind `edge-gmm run`: verify the bundle, open runner, sources and broker, run the Loop.

`run_device(RunSettings)` returns the loop's summary (its `exit_code` is what `run` exits with). The Loop
itself (threads, queues, sensor states, fault counting) is in loop.py; this module only opens and closes
what it needs, in an order that makes every user error fail before the broker is contacted.
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


def open_runner(bundle, requested: str, precision: str | None, threads: int, stack):
    """An active, warmed-up runner. With `auto`, a backend whose engine imports but cannot start (TensorRT
    without cuda-python, say) is skipped with a warning; a runner named by the user must work."""
    from edge_gmm.errors import MissingDependencyError
    from edge_gmm.runtime.runners import create_runner

    candidates = runner_candidates(requested)
    for i, name in enumerate(candidates):
        options = {"threads": threads} if threads and name in ("onnxrt", "torch") else {}
        runner = create_runner(name, bundle, precision=precision, **options)
        try:
            stack.enter_context(runner)
        except MissingDependencyError as e:
            if requested != "auto" or i == len(candidates) - 1:
                raise
            log.warning("runner %s unavailable (%s); trying %s", name, str(e).splitlines()[0], candidates[i + 1])
            continue
        _warm_up(runner)
        return name, runner
    raise AssertionError("unreachable: the last candidate raises")


def _warm_up(runner) -> None:
    """One inference of zeros, so first-call allocations stay out of the latency figures. A failure here is the
    device's (CUDA, TensorRT, memory): the bundle was verified and the feed is the manifest's own."""
    from edge_gmm.errors import DeviceError, EdgeGmmError, RuntimeFailure

    try:
        runner.infer(runner.zeros_feed())
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
        name, runner = open_runner(bundle, settings.runner, settings.precision, settings.threads, stack)
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
                        publish_metrics=publisher.publish_metrics if publisher else None, clock=clock)
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
