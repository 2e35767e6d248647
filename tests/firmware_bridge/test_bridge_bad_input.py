"""CRC-valid frames and forwarder lines that lie (issue 12, items 3 and 8): a timestamp 2**31 us off, a rate of
1e-6 Hz, a value of 1e39, a burst followed by a pause. Each is counted and dropped; the stream goes on. Real
parts: the virtual MCU and forwarder lines over a pty, the reader on the other end."""

import math
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from edge_gmm.firmware_bridge.emulator import VirtualMcu, synthetic_feeds
from edge_gmm.firmware_bridge.forwarder import ForwarderLink
from edge_gmm.firmware_bridge.protocol import (
    Descriptor,
    DescriptorRejected,
    SampleFormat,
    descriptor_frame,
    parse_descriptor,
    samples_frame,
)
from edge_gmm.firmware_bridge.source import open_bridge
from edge_gmm.firmware_bridge.transports import PtyTransport

IMU = Descriptor(1, "imu", "imu", 200.0, 6, SampleFormat.INT16, 0.5, [])


def collect(reader, seconds: float) -> list:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += reader.chunks(timeout=0.05)
    return got


class Mcu:
    """The virtual MCU streaming imu + env over a pty in its own thread, with a reader on the other end."""

    def __init__(self, tmp_path):
        self.tr = PtyTransport(tmp_path / "ttyMCU")
        self.mcu = VirtualMcu(synthetic_feeds("normal", 0, 10.0), self.tr)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.mcu.run, kwargs={"seconds": 20.0, "stop_event": self.stop})
        self.thread.start()
        self.reader = open_bridge(self.tr.port, backoff_s=(0.02, 0.1)).start()

    def close(self):
        self.stop.set()
        self.reader.stop()
        self.thread.join()
        self.tr.close()


@pytest.fixture
def mcu(tmp_path):
    m = Mcu(tmp_path)
    yield m
    m.close()


@pytest.mark.parametrize("change", [dict(rate=1e-6), dict(rate=math.inf), dict(rate=math.nan), dict(rate=2e6),
                                    dict(scale=math.inf), dict(kind="audio", channels=2)])
def test_descriptors_announcing_no_possible_sensor_are_refused(change):
    with pytest.raises(DescriptorRejected):
        parse_descriptor(descriptor_frame(replace(IMU, **change)))
    assert parse_descriptor(descriptor_frame(replace(IMU, rate=0.05))).rate == pytest.approx(0.05)  # a slow gauge is fine


def test_a_frame_stamped_2_31_us_off_is_dropped_and_counted_and_the_stream_goes_on(mcu):
    before = collect(mcu.reader, 1.0)
    assert any(c.modality == "imu" for c in before)
    feed = mcu.mcu.feeds[0]
    values = feed.raw(np.zeros((feed.per_frame, feed.x.shape[1]), np.float32))
    now = mcu.mcu.now_us()
    mcu.mcu.inject(samples_frame(feed.sensor, values, t_us=(now + 2**31 - 1000) & 0xFFFFFFFF),  # 36 min ahead
                   samples_frame(feed.sensor, values, t_us=(now - 2**31 + 1000) & 0xFFFFFFFF))  # ... and behind
    after = collect(mcu.reader, 1.0)
    s = mcu.reader.stats()
    assert s["bad_time"] == 2 and s["internal_errors"] == 0
    imu = [c for c in after if c.modality == "imu"]
    assert sum(len(c) for c in imu) > 100  # 200 Hz goes on
    assert all(abs(c.t[-1] - time.monotonic()) < 5.0 for c in after)  # nothing 36 minutes away got through
    t = np.concatenate([c.t for c in imu])
    assert np.all(np.diff(t) > 0) and np.median(np.diff(t)) == pytest.approx(0.005, rel=0.01)


def test_a_descriptor_at_1e_6_hz_is_refused_and_the_sensor_keeps_its_rate(mcu):
    collect(mcu.reader, 0.5)
    d = mcu.mcu.feeds[0].descriptor()
    mcu.mcu.inject(descriptor_frame(replace(d, rate=1e-6)))
    after = collect(mcu.reader, 0.8)
    assert mcu.reader.stats()["bad_descriptor"] == 1
    assert {s.name: s.rate for s in mcu.reader.sensors()}["imu"] == 200.0
    t = np.concatenate([c.t for c in after if c.modality == "imu"])
    assert len(t) > 100 and np.diff(t).max() < 0.5  # not samples 11 days apart


# ---------------------------------------------------------------- Edge Impulse forwarder lines


def test_a_burst_then_a_pause_never_detects_0_hz():
    link = ForwarderLink()
    out = link.feed(b"".join(b"%d,1\n" % i for i in range(25)), 100.0)  # a burst of 25 lines ...
    out += link.feed(b"1,2\n", 130.0)  # ... a 30 s pause (the old detection: 1 line / 30 s -> rounds to 0 Hz)
    for k in range(1, 40):  # then 50 Hz in reads of 5 lines
        out += link.feed(b"3,4\n" * 5, 130.0 + k * 0.1)
    assert link.rate == 50.0
    assert sum(len(c) for c in out) == 24 + 1 + 39 * 5  # nothing lost while detecting (first line dropped)
    assert np.median(np.diff(np.concatenate([c.t for c in out]))) == pytest.approx(0.02, rel=0.01)


def test_a_detected_rate_no_sensor_has_is_refused_counted_and_detected_again():
    link = ForwarderLink()
    for k in range(25):  # a line every 2000 s: 0.0005 Hz, below any SensorSpec
        assert link.feed(b"1,2\n", 100.0 + 2000.0 * k) == []
    assert link.rate is None and link.stats.bad_descriptor == 1 and link.sensors() == []
    out = []
    for k in range(1, 30):  # the real stream shows up: detected afresh
        out += link.feed(b"1,2\n" * 5, 60000.0 + k * 0.1)
    assert link.rate == 50.0 and sum(len(c) for c in out) > 0


def test_slow_rates_round_to_two_digits_never_to_0():
    from edge_gmm.firmware_bridge.forwarder import _round_rate

    assert _round_rate(0.033) == 0.033 and _round_rate(2.46) == 2.5 and _round_rate(62.4) == 62.0


def test_forwarder_over_a_pty_burst_pause_and_1e39(tmp_path):
    tr = PtyTransport(tmp_path / "ttyEI")
    r = open_bridge(tr.port, format="ei-forwarder").start()
    try:
        time.sleep(0.2)
        tr.write(b"".join(b"%d,%d,%d\n" % (i, i, i) for i in range(30)))  # a burst on connect ...
        time.sleep(1.2)  # ... the firmware busy for a while ...
        t0 = time.monotonic()
        for k in range(22):  # ... then 100 Hz in reads of 10 lines, one of them over float32's range
            lines = b"".join(b"1,2,3\n" for _ in range(10))
            tr.write(lines.replace(b"1,2,3\n", b"1e39,2,3\n", 1) if k == 15 else lines)
            time.sleep(max(0.0, t0 + (k + 1) * 0.1 - time.monotonic()))
        got = collect(r, 0.5)
        (spec,) = r.sensors()
        assert spec.rate == pytest.approx(100, rel=0.1)  # the pause says nothing about the sample rate
        x = np.concatenate([c.x for c in got])
        assert np.isfinite(x).all() and x.max() == 29.0  # the burst's last line; 1e39 did not become inf
        s = r.stats()
        assert s["malformed"] == 1 and s["internal_errors"] == 0
        assert len(x) == 29 + 22 * 10 - 1
    finally:
        r.stop()
        tr.close()


def test_a_late_reader_catching_up_is_not_a_pause():
    """A loaded host reads late (one read after 0.5 s with 20 lines), then drains the backlog in quick reads:
    the source kept sending at 200 Hz, so the detected rate stays 200, not the backlog over the steady time."""
    from edge_gmm.firmware_bridge.forwarder import steady_rate

    arrivals, lines, t = [0.0], [10], 0.0
    for _ in range(20):  # steady: a read every 50 ms with 10 lines
        t += 0.05
        arrivals.append(t), lines.append(10)
    t += 0.5  # the reader was descheduled; the source sent 100 lines meanwhile ...
    arrivals.append(t), lines.append(20)
    for _ in range(4):  # ... the rest arrive in four reads 1 ms apart
        t += 0.001
        arrivals.append(t), lines.append(20)
    for _ in range(10):
        t += 0.05
        arrivals.append(t), lines.append(10)
    rate, _ = steady_rate(np.array(arrivals), np.array(lines))
    assert rate == pytest.approx(200, rel=0.05)
