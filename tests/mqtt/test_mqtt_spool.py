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
from edge_gmm.errors import DeviceError
from edge_gmm.mqtt.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the size limit: write() fails with EFBIG, like a full disk
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
sp = Spool(sys.argv[1], max_bytes=1 << 20)
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))
ok = 0
try:
    while True:
        sp.append(sp.next_seq, "t", b"x" * 100)
        ok += 1
except DeviceError as e:
    print(ok, "cannot write" in str(e))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
sp.append(sp.next_seq, "t", b"y" * 100)
"""


def test_full_disk_is_a_clear_error_and_leaves_no_torn_record(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=30)
    ok, clear = out.stdout.split()
    assert clear == "True", out.stderr
    with Spool(tmp_path, max_bytes=1 << 20) as sp:  # every record written before and after the failure is there
        got = sp.pending_from(0, 1000)
    assert [s for s, _, _ in got] == list(range(int(ok) + 1)) and got[-1][2] == b"y" * 100
