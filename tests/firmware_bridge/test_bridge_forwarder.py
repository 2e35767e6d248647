"""Edge Impulse data-forwarder lines: separators, first-line drop, rate given or detected, AT commands."""

import threading
import time

import numpy as np
import pytest

from edge_gmm.firmware_bridge.emulator import VirtualMcu, synthetic_feeds
from edge_gmm.firmware_bridge.forwarder import ForwarderLink
from edge_gmm.firmware_bridge.source import open_bridge
from edge_gmm.firmware_bridge.transports import PtyTransport


def test_separators_first_line_and_bad_lines():
    link = ForwarderLink(frequency=100)
    chunks = link.feed(b"7,8,9\r\n1,2,3\r\n4\t5\t6\n7 8  9\r\nboot: hello\n1,2\n1,nan,3\n", 10.0)
    x = np.concatenate([c.x for c in chunks])
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]  # the first (maybe truncated) line is dropped
    assert link.stats.malformed == 3  # a text line, a line with the wrong value count, a NaN
    (spec,) = link.sensors()
    assert (spec.name, spec.kind, spec.channels, spec.rate) == ("imu", "imu", 3, 100.0)
    t = np.concatenate([c.t for c in chunks])
    assert np.allclose(np.diff(t), 0.01)


def test_partial_lines_across_reads():
    link = ForwarderLink(frequency=50, name="env", kind="timeseries")
    got = []
    for piece in (b"x\n1.5,", b"2.5\n3", b".5,4.5\n"):
        got += link.feed(piece, time.monotonic())
    assert np.concatenate([c.x for c in got]).tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert got[0].modality == "env"


def test_rate_detected_from_arrival_times():
    link = ForwarderLink()
    out = []
    for i in range(150):  # 62.5 Hz, lines arriving in bursts of 5
        if i % 5 == 4:
            out += link.feed(b"".join(b"%d,%d\n" % (j, j) for j in range(5)), 100.0 + i / 62.5)
    assert link.rate == 62 or link.rate == 63
    assert sum(len(c) for c in out) == 149  # nothing lost while detecting (first line dropped)
    assert link.sensors()[0].kind == "timeseries"


def test_emulated_forwarder_firmware_over_a_pty_with_at_commands(tmp_path):
    tr = PtyTransport(tmp_path / "ttyEI")
    mcu = VirtualMcu(synthetic_feeds("normal", 0, 3.0), tr, text=True)
    stop = threading.Event()
    th = threading.Thread(target=mcu.run, kwargs={"seconds": 6.0, "stop_event": stop})
    th.start()
    r = open_bridge(str(tmp_path / "ttyEI"), format="ei-forwarder", at_commands=True).start()
    try:
        deadline = time.monotonic() + 5
        n = 0
        while time.monotonic() < deadline and not r.sensors():
            n += sum(len(c) for c in r.chunks(0.1))
        assert r.sensors(), "rate detection did not finish"
        spec = r.sensors()[0]
        assert spec.channels == 6 and spec.rate == pytest.approx(200, rel=0.1)
        r.stop()  # sends AT+STOPDATAFWD: the firmware stops streaming
        time.sleep(0.3)
        assert mcu.streaming is False
    finally:
        stop.set()
        th.join()
        tr.close()
