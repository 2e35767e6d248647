"""The spool: order, survival across reopen (a process restart), torn writes, the byte bound."""

import json
import os

import pytest

from edge_gmm.errors import DeviceError
from edge_gmm.mqtt.spool import Spool

TOPIC = "edge-gmm/v1/d/prediction"


def fill(spool, n, size=100):
    for _ in range(n):
        seq = spool.next_seq
        spool.append(seq, TOPIC, json.dumps({"seq": seq}).encode().ljust(size))


def seqs(spool, start=0, limit=10_000):
    return [s for s, _, _ in spool.pending_from(start, limit)]


def test_records_come_back_in_order_until_acked(tmp_path):
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        fill(sp, 50)
        got = sp.pending_from(0, 100)
        assert [s for s, _, _ in got] == list(range(50))
        assert all(t == TOPIC and json.loads(d)["seq"] == s for s, t, d in got)
        for s in range(0, 50, 2):
            sp.ack(s)
        assert seqs(sp) == list(range(1, 50, 2))
        assert sp.first_pending() == 1 and sp.pending == 25


def test_unacked_records_and_seq_survive_reopen(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    fill(sp, 30)
    for s in range(10):
        sp.ack(s)
    sp.close()
    sp = Spool(tmp_path, max_bytes=1 << 20)
    assert sp.recovered == 20 and seqs(sp) == list(range(10, 30)) and sp.next_seq == 30
    for s in range(10, 30):
        sp.ack(s)
    sp.close()
    # everything acked: the seq still continues after a restart
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        assert sp.next_seq == 30 and seqs(sp) == []


def test_kill_without_close_keeps_records_and_cuts_a_torn_tail(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    fill(sp, 5)
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a record header torn by a kill
    os.close(sp._lock_fd)  # as if the process died here: no close(), its flock goes with it
    sp._lock_fd = None
    with Spool(tmp_path, max_bytes=1 << 20) as sp2:
        assert seqs(sp2) == [0, 1, 2, 3, 4] and sp2.next_seq == 5
        fill(sp2, 1)
        assert seqs(sp2) == [0, 1, 2, 3, 4, 5]


def test_full_spool_drops_oldest_and_counts_them(tmp_path):
    with Spool(tmp_path, max_bytes=16 << 10) as sp:  # 2 KiB segments, ~17 records each
        fill(sp, 1000)
        left = seqs(sp)
        assert sp.bytes <= 16 << 10
        assert sp.dropped + len(left) == 1000
        assert left == list(range(left[0], 1000))  # the newest survive, contiguous


def test_second_owner_is_refused(tmp_path):
    with Spool(tmp_path):
        with pytest.raises(DeviceError, match="in use"):
            Spool(tmp_path)


FULL_DISK = """
import resource, signal, sys
from edge_gmm.mqtt import spool as spool_mod
from edge_gmm.mqtt.spool import Spool
spool_mod.DISK_RETRY_S = 0.0  # try the disk again on every append
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the size limit: write() fails with EFBIG, like a full disk
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
sp = Spool(sys.argv[1], max_bytes=1 << 20, reserve_bytes=0)
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))
for _ in range(100):  # no exception: what the disk refuses is kept in memory (each file stops at 4000 bytes)
    sp.append(sp.next_seq, "t", b"x" * 100)
in_memory = sp.unspooled
assert [s for s, _, _ in sp.pending_from(0, 1000)] == list(range(100))  # all of them, in order
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
sp.append(sp.next_seq, "t", b"y" * 100)
print(in_memory, sp.unspooled, sp.disk_error is None)
"""


def test_full_disk_keeps_records_in_memory_leaves_no_torn_record_and_recovers(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    in_memory, unspooled, recovered = out.stdout.split()
    assert 0 < int(in_memory) == int(unspooled) < 100 and recovered == "True"
    with Spool(tmp_path, max_bytes=1 << 20) as sp:  # on disk: every record the disk took, whole, in order
        got = [s for s, _, _ in sp.pending_from(0, 1000)]
        assert sp.pending_from(100, 1)[0][2] == b"y" * 100
    assert len(got) == 101 - int(in_memory) and got == sorted(got) and got[-1] == 100


def test_acked_records_do_not_pin_the_disk(tmp_path):
    with Spool(tmp_path, max_bytes=32 << 20, reserve_bytes=0) as sp:  # 4 MiB segments
        for _ in range(20):
            first = sp.next_seq
            fill(sp, 500, size=200)  # ~100 KiB
            sp.ack_many(list(range(first, sp.next_seq)))
            on_disk = sum(p.stat().st_size for p in tmp_path.glob("seg-*.log"))
            assert on_disk < 128 << 10  # the active segment is rotated once all of it is acked
        assert sp.pending == 0 and sp.bytes < 128 << 10
    with Spool(tmp_path) as sp:
        assert sp.next_seq == 10_000 and seqs(sp) == []


def test_state_file_is_fixed_size_so_it_can_be_rewritten_on_a_full_disk(tmp_path):
    with Spool(tmp_path, reserve_bytes=0) as sp:
        fill(sp, 3)
        sp.ack(0)
        sp.save_state()
        size = (tmp_path / "state.json").stat().st_size
        fill(sp, 100_000, size=10)
    assert (tmp_path / "state.json").stat().st_size == size
    assert json.loads((tmp_path / "state.json").read_text())["next_seq"] == 100_003
