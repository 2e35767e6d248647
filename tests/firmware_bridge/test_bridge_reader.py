"""The reader on real transports: loop://, socket:// (peer closes mid-stream), a pty fed by the virtual MCU
with faults, unplugs and a wrapping MCU clock."""

import socket
import threading
import time

import numpy as np
import pytest

from edge_gmm.errors import ConfigError, DeviceError
from edge_gmm.firmware_bridge.emulator import VirtualMcu, synthetic_feeds
from edge_gmm.firmware_bridge.faults import FaultInjector
from edge_gmm.firmware_bridge.protocol import Descriptor, SampleFormat, descriptor_frame, encode_frame, samples_frame
from edge_gmm.firmware_bridge.source import open_bridge
from edge_gmm.firmware_bridge.transports import PtyTransport

IMU = Descriptor(1, "imu", "imu", 200.0, 6, SampleFormat.INT16, 0.5, ["g"] * 3 + ["dps"] * 3)


def imu_stream(n_frames, per=10):
    data = encode_frame(descriptor_frame(IMU, seq=0))
    for i in range(n_frames):
        values = np.arange(per * 6).reshape(per, 6) + 100 * i
        data += encode_frame(samples_frame(1, values, seq=i + 1, t_us=i * per * 5000))
    return data


def collect(reader, until, timeout=5.0):
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        got += reader.chunks(timeout=0.05)
    return got


def test_loop_url_yields_scaled_samples_on_the_host_clock():
    with open_bridge("loop://") as r:
        before = time.monotonic()
        r._port.write(imu_stream(5))
        got = collect(r, lambda g: sum(len(c) for c in g) >= 50)
    assert [s.name for s in r.sensors()] == ["imu"] and r.sensors()[0].units[3] == "dps"
    x = np.concatenate([c.x for c in got])
    assert x.dtype == np.float32 and x.shape == (50, 6)
    assert x[1, 0] == pytest.approx(6 * 0.5)  # raw 6 * scale 0.5
    t = np.concatenate([c.t for c in got])
    assert t.dtype == np.float64 and np.allclose(np.diff(t), 0.005, atol=1e-6)
    assert before - 1 < t[-1] < time.monotonic() + 1


def test_socket_peer_close_loses_no_bytes_and_reconnects():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    r = open_bridge(f"socket://127.0.0.1:{port}", describe=False, backoff_s=(0.02, 0.1))
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    t.start()
    r.start()
    t.join(5)
    conn = accepted[0]
    conn.sendall(imu_stream(40))
    conn.close()  # the peer goes away right after the last byte: those bytes must still arrive
    got = collect(r, lambda g: sum(len(c) for c in g) >= 400)
    assert sum(len(c) for c in got) == 400
    # the reader notices, backs off and connects again to the next peer
    conn2, _ = server.accept()
    # pyserial's socket open() discards whatever arrived before it returned: send once the reader is back
    deadline = time.monotonic() + 5
    while r.stats()["connects"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    conn2.sendall(imu_stream(3))
    more = collect(r, lambda g: sum(len(c) for c in g) >= 30)
    r.stop()
    conn2.close()
    server.close()
    assert sum(len(c) for c in more) == 30
    s = r.stats()
    assert s["disconnects"] >= 1 and s["connects"] >= 2 and s["crc_errors"] == 0


def test_missing_port_is_a_device_error_and_a_bad_url_a_config_error(tmp_path):
    with pytest.raises(DeviceError, match="cannot open serial port"):
        open_bridge(str(tmp_path / "ttyNOPE")).start()
    with pytest.raises(ConfigError):
        open_bridge("nosuch://x").start()


def test_pty_with_faults_unplug_and_wrapping_clock(tmp_path):
    link = tmp_path / "ttyMCU"
    tr = PtyTransport(link)
    faults = FaultInjector(["bitflip", "drop", "garbage", "unplug"], rate=0.05, seed=2)
    mcu = VirtualMcu(synthetic_feeds("normal", 1, 4.0), tr, faults=faults,
                     clock_start_us=2**32 - 1_500_000, unplug_every_s=1.6, unplug_s=0.3)
    stop = threading.Event()
    th = threading.Thread(target=mcu.run, kwargs={"seconds": 4.0, "stop_event": stop})
    th.start()
    r = open_bridge(str(link), wait_for_port=True, backoff_s=(0.02, 0.1)).start()
    got = []
    try:
        while th.is_alive():
            got += r.chunks(timeout=0.1)
        got += collect(r, lambda g: False, timeout=0.3)
    finally:
        stop.set()
        r.stop()
        tr.close()
    s = r.stats()
    assert mcu.sent["unplugs"] == 2 and s["disconnects"] >= 2 and s["connects"] >= 3
    assert s["crc_errors"] + s["malformed"] >= 1 and s["internal_errors"] == 0
    by = {}
    for c in got:
        by.setdefault(c.modality, []).append(c)
    assert set(by) == {"imu", "env"}
    t = np.concatenate([c.t for c in by["imu"]])
    assert np.all(np.diff(t) > 0)  # in order across the clock wrap (at 1.5 s) and the reconnects
    step = np.diff(t)
    assert np.median(step) == pytest.approx(0.005, rel=0.01)
    # samples lost while unplugged show as time gaps, not as a clock that jumped by 71 minutes
    assert step.max() < 2.0
    assert sum(len(c) for c in by["imu"]) > 300


def test_socket_emulator_obeys_set_rate_and_stamps_samples_near_arrival():
    from edge_gmm.firmware_bridge.protocol import Command
    from edge_gmm.firmware_bridge.transports import SocketTransport

    tr = SocketTransport("127.0.0.1", 0)
    mcu = VirtualMcu(synthetic_feeds("imbalance", 3, 3.0), tr)
    stop = threading.Event()
    th = threading.Thread(target=mcu.run, kwargs={"seconds": 6.0, "stop_event": stop})
    th.start()
    r = open_bridge(tr.port).start()
    try:
        got = collect(r, lambda g: len(r.sensors()) == 2 and sum(len(c) for c in g if c.modality == "imu") >= 200)
        lag = [time.monotonic() - c.t[-1] for c in r.chunks(timeout=0.2)]
        assert {s.name: s.rate for s in r.sensors()} == {"imu": 200.0, "env": 10.0}
        assert len(got) and max(lag) < 0.25  # the last sample of a chunk is stamped close to when it came in
        assert r.send_command(Command.SET_RATE, sensor=1, value=100.0)
        collect(r, lambda g: {s.name: s.rate for s in r.sensors()}.get("imu") == 100.0, timeout=3)
        assert {s.name: s.rate for s in r.sensors()}["imu"] == 100.0
        after = collect(r, lambda g: sum(len(c) for c in g if c.modality == "imu") >= 60, timeout=3)
        t = np.concatenate([c.t for c in after if c.modality == "imu"])
        assert np.median(np.diff(t)) == pytest.approx(0.01, rel=0.01)
    finally:
        stop.set()
        r.stop()
        th.join()
        tr.close()
