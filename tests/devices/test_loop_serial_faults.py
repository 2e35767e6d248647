"""The device loop against sensors that lie (issue 12, items 3 and 4): a CRC-valid frame stamped 2**31 us off, an MCU
that re-describes a sensor, a recording whose clock jumps by an hour. Predictions go on, the fault is counted,
the sensor is used again once it is right. Real parts: the virtual MCU on a pty, the serial bridge, a replayed
dataset, the tiny ONNX bundle through onnxruntime."""

import threading
import time

import numpy as np

from edge_gmm.devices.job import RunSettings, run_device
from edge_gmm.devices.sources import Source
from edge_gmm.devices.sources.driver import SourceDriver
from edge_gmm.errors import DataError
from edge_gmm.firmware_bridge.emulator import VirtualMcu, synthetic_feeds
from edge_gmm.firmware_bridge.protocol import SampleFormat, samples_frame
from edge_gmm.firmware_bridge.transports import PtyTransport
from test_loop_kit import SCENARIO_OPTS, LABELS, scenario_sensors, tiny_bundle, wait_until  # noqa: F401  (fixture)


class SerialRun:
    """`run_device` in a thread on imu + env from a virtual MCU over a pty (no broker: a dry run)."""

    def __init__(self, bundle, tmp_path):
        self.tr = PtyTransport(tmp_path / "ttyMCU")
        self.mcu = VirtualMcu(synthetic_feeds("normal", 0, 10.0), self.tr)
        self.stop = threading.Event()
        self.mcu_thread = threading.Thread(target=self.mcu.run, kwargs={"seconds": 60.0, "stop_event": self.stop})
        self.mcu_thread.start()
        sources = tmp_path / "sources.yaml"
        sources.write_text(f"imu: {self.tr.port}\nenv: {self.tr.port}\n")
        self.loops, self.summary = [], {}
        settings = RunSettings(bundle=str(bundle), sources=str(sources), mqtt="none", device_id="faults",
                               max_seconds=60)
        run = lambda: self.summary.update(run_device(settings, on_loop=self.loops.append))  # noqa: E731
        self.thread = threading.Thread(target=run)
        self.thread.start()
        wait_until(lambda: self.loops and self.sensors().get("imu") == "ok", "imu ok")

    @property
    def loop(self):
        return self.loops[0]

    def sensors(self) -> dict:
        return self.loops[0].current_sensors() if self.loops else {}

    def predictions(self) -> int:
        return self.loop.counts["predictions"]

    def close(self) -> dict:
        if self.loops:
            self.loop.request_stop("test done")
        self.thread.join(timeout=20)
        self.stop.set()
        self.mcu_thread.join()
        self.tr.close()
        return self.summary


def test_a_frame_stamped_2_31_us_ahead_does_not_stall_predictions(tiny_bundle, tmp_path):  # noqa: F811
    run = SerialRun(tiny_bundle, tmp_path)
    try:
        feed = run.mcu.feeds[0]
        values = feed.raw(np.zeros((feed.per_frame, feed.x.shape[1]), np.float32))
        n = run.predictions()
        ahead = (run.mcu.now_us() + 2**31 - 1000) & 0xFFFFFFFF  # 36 min ahead of the MCU clock
        run.mcu.inject(samples_frame(feed.sensor, values, SampleFormat.INT16, t_us=ahead))
        wait_until(lambda: run.predictions() >= n + 6, "predictions after the bad frame")  # a window every 0.5 s
        assert run.sensors()["imu"] == "ok"
        windows = run.loop.counts["windows"]
    finally:
        s = run.close()
    (src,) = s["sources"].values()
    assert src["bad_time"] == 1 and src["state"] == "up"
    assert windows < 60  # not 4,282 windows cut for a 36-minute future


def test_a_re_described_sensor_is_masked_until_it_matches_and_the_port_keeps_flowing(tiny_bundle, tmp_path):  # noqa: F811
    run = SerialRun(tiny_bundle, tmp_path)
    try:
        six = run.mcu.feeds[0].x.copy()
        run.mcu.redescribe(1, six[:, :3])  # the firmware now announces imu with 3 channels, and sends 3
        wait_until(lambda: run.sensors().get("imu") == "stale", "imu masked")
        n = run.predictions()
        wait_until(lambda: run.predictions() >= n + 3, "predictions while imu is masked")
        assert run.sensors()["env"] == "ok"  # the other sensor on the port goes on
        run.mcu.redescribe(1, six)  # a matching descriptor again
        wait_until(lambda: run.sensors().get("imu") == "ok", "imu used again")
    finally:
        s = run.close()
    (src,) = s["sources"].values()
    assert src["state"] == "up" and src["descriptor_mismatch"] == 1 and src["masked"] == [] and src["masked_chunks"] > 0


def test_a_recording_whose_clock_jumps_an_hour_is_one_discontinuity(tmp_path, tiny_bundle):  # noqa: F811
    from edge_gmm.data import synth
    from edge_gmm.data.format import DatasetWriter, Stream

    sc = synth.get_scenario("machine-health", **SCENARIO_OPTS)
    s = sc.session(LABELS[0], seed=3, duration_s=6.0, sid="jump")
    imu = s.streams["imu"]
    t = imu.t.copy()
    t[len(t) // 2:] += 3600.0  # 3 s in, the clock jumps an hour
    s.streams = {"imu": Stream(t, imu.x)}
    with DatasetWriter(tmp_path / "jump", name="jump", sensors=sc.sensors(), tasks=sc.tasks(), window=sc.window()) as w:
        w.add(s, "test")
    t0 = time.monotonic()
    out = run_device(RunSettings(bundle=str(tiny_bundle), sources=f"replay://{tmp_path / 'jump'}?modalities=imu",
                                 mqtt="none", device_id="jump", speed=float("inf")))
    assert time.monotonic() - t0 < 30 and out["reason"] == "sources ended"
    assert out["assembler"]["discontinuities"]["imu"] == 1
    assert 6 <= out["predictions"] <= 14  # ~5 windows either side, not 7,200 for the hour in between
    assert out["sensor_windows"]["imu:ok"] >= 6


class _Flaky(Source):
    """A live source whose first stream raises DataError (a board sending nonsense), then delivers."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.opened = 0

    def stream(self, stop):
        from edge_gmm.data.format import SensorChunk

        self.opened += 1
        if self.opened == 1:
            raise DataError("the MCU sends imu samples of shape (9,)")
        yield SensorChunk("imu", np.array([0.0]), np.zeros((1, 6), np.float32))


def test_a_live_source_raising_data_error_is_retried_not_failed_for_good():
    from edge_gmm.devices.sources import parse_uri

    states = []
    stop = threading.Event()
    src = _Flaky(parse_uri("serial:///dev/ttyNOPE"), {s.name: s for s in scenario_sensors() if s.name == "imu"},
                 clock=None)
    d = SourceDriver(src, lambda chunk: stop.set(), lambda drv, state: states.append(state), stop)
    d.start()
    d.join(5)
    assert not d.is_alive() and src.opened == 2
    assert states[:3] == ["connecting", "down", "connecting"] and "failed" not in states and "up" in states
