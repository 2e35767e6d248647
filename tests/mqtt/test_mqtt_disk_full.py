"""A full disk on a real (2 MiB tmpfs) filesystem: the spool keeps the device publishing and never pins disk."""

import errno
import os
import subprocess
import time

import pytest
from mqtt_kit import wait_until

from edge_gmm.mqtt import spool as spool_mod
from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.spool import Spool
from edge_gmm.mqtt.subscriber import Subscriber
from edge_gmm.mqtt.url import parse_mqtt_url

DEV = "dev1"
TOPIC = "edge-gmm/v1/dev1/prediction"


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs (needs root: mount)."""
    d = tmp_path / "fs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        reason = f"cannot mount a 2 MiB tmpfs here ({(r.stderr or 'not root?').strip()})"
        print(reason)
        pytest.skip(reason)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.fixture
def fast_retry(monkeypatch):
    monkeypatch.setattr(spool_mod, "DISK_RETRY_S", 0.05)


def fill(fs, leave: int = 0):
    """Write a ballast file until the filesystem is full (or only `leave` bytes are free)."""
    ballast = fs / "ballast"
    chunk = b"\0" * 4096
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                st = os.statvfs(fs)
                if st.f_bavail * st.f_frsize <= leave:
                    break
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return ballast



def test_spool_opens_and_takes_records_on_a_full_disk_then_spools_again(small_fs, fast_retry):
    ballast = fill(small_fs)
    sp = Spool(small_fs / "spool", reserve_bytes=0)  # a first start on a full disk: no exception
    for i in range(50):
        sp.append(i, TOPIC, b'{"seq":%d}' % i)
    assert sp.unspooled == 50 and sp.disk_error
    assert [s for s, _, _ in sp.pending_from(0, 100)] == list(range(50))
    sp.save_state()  # no exception either
    sp.ack_many(list(range(50)))
    ballast.unlink()  # space again
    time.sleep(0.06)
    sp.append(50, TOPIC, b'{"seq":50}')
    assert sp.disk_error is None and sp.unspooled == 50
    sp.close()
    with Spool(small_fs / "spool", reserve_bytes=0) as again:
        assert [s for s, _, _ in again.pending_from(0, 100)] == [50] and again.next_seq == 51


def test_spool_keeps_the_free_space_reserve(small_fs):
    fill(small_fs, leave=64 << 10)  # about 64 KiB free
    with Spool(small_fs / "strict", reserve_bytes=96 << 10) as sp:  # wants 96 KiB left free: must not grow
        sp.append(0, TOPIC, b"{}")
        assert sp.unspooled == 1 and "reserve" in sp.disk_error
        assert not list((small_fs / "strict").glob("seg-*.log"))
    with Spool(small_fs / "lenient", reserve_bytes=32 << 10) as sp:
        sp.append(0, TOPIC, b"{}")
        assert sp.unspooled == 0 and sp.disk_error is None


def test_the_reserve_is_at_most_a_twentieth_of_a_small_filesystem(small_fs):
    fill(small_fs, leave=1 << 20)  # 1 MiB of 2 MiB free: the default 32 MiB reserve would forbid spooling for good
    with Spool(small_fs / "spool") as sp:
        sp.append(0, TOPIC, b"{}")
        assert sp.unspooled == 0 and sp.disk_error is None


def test_with_the_broker_up_everything_is_delivered_while_the_disk_is_full(mosquitto, small_fs, fast_retry):
    ballast = fill(small_fs)
    sub = Subscriber(parse_mqtt_url(mosquitto.url), DEV, client_id="watcher").start()
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=small_fs / "spool", spool_reserve_bytes=0).start()
    for _ in range(200):
        pub.publish_prediction(example_prediction(DEV))
    assert wait_until(lambda: pub.stats()["acked"] == 200), pub.stats()
    st = pub.stats()
    assert st["unspooled"] == 200 and st["spooled"] == 0 and st["spool_error"]
    ballast.unlink()
    time.sleep(0.06)
    for _ in range(50):
        pub.publish_prediction(example_prediction(DEV))
    assert wait_until(lambda: pub.stats()["acked"] == 250)
    assert pub.stats()["unspooled"] == 200 and pub.stats()["spool_error"] is None  # recovered on its own
    assert wait_until(lambda: sub.stats()["received"] >= 250)
    pub.stop()
    sub.stop()
    assert sorted(p["seq"] for p in sub.predictions) == list(range(250)) and sub.stats()["gaps"] == 0


def test_delivered_predictions_do_not_fill_a_small_disk(mosquitto, small_fs):
    # the issue: acked records stayed in a 4 MiB active segment, so 2 MiB of delivered predictions filled
    # this disk and the state write crashed the loop with nothing pending
    pub = Publisher(parse_mqtt_url(mosquitto.url), DEV, spool_dir=small_fs / "spool", spool_reserve_bytes=0).start()
    big = {**example_prediction(DEV), "note": "x" * 4000}
    for batch in range(12):  # 12 x 50 x ~4.4 KB = 2.6 MB through a 2 MiB filesystem
        for _ in range(50):
            pub.publish_prediction(big)
        assert wait_until(lambda: pub.stats()["acked"] == 50 * (batch + 1)), pub.stats()
    st = pub.stats()
    pub.stop()
    assert st["unspooled"] == 0 and st["spooled"] == 0 and st["spool_error"] is None
    assert sum(p.stat().st_size for p in (small_fs / "spool").glob("seg-*.log")) < 256 << 10
