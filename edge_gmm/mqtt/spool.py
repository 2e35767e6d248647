"""On-disk spool: predictions wait here until the broker has acknowledged them (PUBACK).

Every prediction is written here *before* it is handed to the MQTT client, and leaves only when its
PUBACK arrives; so a broker that is down, a broker restart and a restart of our own process all end with
the waiting predictions delivered, in sequence order.

Layout of `directory`:
    seg-<first seq, 16 digits>.log   records appended in seq order: header REC + topic + payload
    state.json                       {"next_seq": N, "acked_below": W}, padded to a fixed size, replaced atomically
    lock                             flock'ed while a process owns the spool

The spool is bounded in bytes: when a new record would not fit, whole segments are dropped oldest first
and their unacknowledged records are counted in `dropped`. Segments are small (max_bytes / 8, at most
4 MiB) so a drop loses little; a segment whose records are all acked is deleted (the one being written
once it holds ROTATE_BYTES), so delivered predictions never pin the disk. Acks are remembered on disk as
the watermark `acked_below` (saved at most twice a second and on close): after a crash, records
acknowledged since the last save are sent again, so delivery is at-least-once and the subscriber reports
those as duplicates, never as gaps. Writes are not fsync'ed: they survive a process kill, not a power cut.

Disk policy: the spool never lets the filesystem's free space fall below `reserve_bytes` (at most
5 % of the filesystem). When it may not
or cannot write (the reserve, ENOSPC, EDQUOT, EIO, a file size limit), records go to in-memory segments
instead (bounded by MEMORY_MAX_BYTES, oldest dropped first), counted in `unspooled` and logged once; they
are sent like the others but do not survive a restart. Once a second, the disk is tried again. Nothing
here raises for a full disk, at open either: a full disk must not stop live predictions.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from edge_gmm.errors import DataError, DeviceError

log = logging.getLogger(__name__)

REC = struct.Struct("<IIQH")  # payload bytes, crc32(topic + payload), seq, topic bytes
SEG_GLOB = "seg-*.log"
STATE = "state.json"
STATE_BYTES = 128  # state.json is padded to this: rewriting it in place never needs a new disk block
ROTATE_BYTES = 64 << 10  # a fully acked segment being written is closed and deleted once it is this big
DEFAULT_RESERVE_BYTES = 32 << 20  # free space the spool leaves to the rest of the system
MEMORY_MAX_BYTES = 16 << 20  # records held in memory while the disk refuses them
RESERVE_CHECK_BYTES = 64 << 10  # statvfs at most once per this many bytes appended
DISK_RETRY_S = 1.0
# the disk refusing to store: keep publishing from memory. Anything else (EACCES, EROFS) is a setup error
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG)


@dataclass
class _Segment:
    first_seq: int
    path: Path | None  # None: an in-memory segment (the disk refused these records)
    offsets: list[int] = field(default_factory=list)  # record i (seq first_seq + i) starts here
    done: bytearray = field(default_factory=bytearray)  # 1 = acked (or below the watermark)
    size: int = 0
    unacked: int = 0
    fd: int | None = None  # read fd, opened lazily
    mem: list[bytes] | None = None  # the records of an in-memory segment

    @property
    def end_seq(self) -> int:  # one past the last record
        return self.first_seq + len(self.offsets)

    def read(self, i: int) -> tuple[str, bytes]:
        if self.mem is not None:
            raw = self.mem[i]
        else:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDONLY)
            start = self.offsets[i]
            end = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.size
            raw = os.pread(self.fd, end - start, start)
        n, _crc, _seq, tlen = REC.unpack_from(raw)
        body = raw[REC.size :]
        return body[:tlen].decode(), body[tlen : tlen + n]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


RESERVE_FS_FRACTION = 20  # the reserve is at most 1/20 of the filesystem


class Spool:
    """Thread-safe: the caller appends, the publisher's pump reads and acks."""

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20, segment_bytes: int | None = None,
                 reserve_bytes: int = DEFAULT_RESERVE_BYTES):
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        if self.max_bytes < 4096:
            raise DataError(f"spool: max_bytes must be at least 4096, got {max_bytes}")
        self.segment_bytes = segment_bytes or max(1024, min(4 << 20, self.max_bytes // 8))
        self.reserve_bytes = max(0, int(reserve_bytes))
        self.memory_max_bytes = min(self.max_bytes, MEMORY_MAX_BYTES)
        self.dropped = 0
        self.unspooled = 0  # records the disk refused: held in memory instead
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None  # the segment taking appends (the newest)
        self._active_fd: int | None = None  # its append fd when it is on disk
        self._bytes = 0
        self._mem_bytes = 0
        self._state_dirty = False
        self._lock_fd: int | None = None
        self._closed = False
        self._disk_error: str | None = None  # why records go to memory now
        self._disk_retry_at = 0.0
        self._state_error: str | None = None
        self._since_check = RESERVE_CHECK_BYTES  # check free space on the first append
        self._next_seq, self._recovered = 0, 0
        try:
            self._open_dir()
        except OSError as e:
            if e.errno not in SPACE_ERRNOS:
                raise DeviceError(f"spool {self.dir}: {e.strerror or e}", hint="pick a writable spool directory") from None
            self._disk_failed(e)  # a first start on a full disk: nothing on it to recover
            return
        self._next_seq, self._recovered = self._recover()

    def _open_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DeviceError(
                f"spool {self.dir} is in use by another process",
                hint="run one publisher per device id, or give this one its own spool directory",
            ) from None
        self._lock_fd = fd

    # ------------------------------------------------------------ recovery

    def _recover(self) -> tuple[int, int]:
        state = {}
        try:
            state = json.loads((self.dir / STATE).read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("spool %s: unreadable %s (%s); continuing from the segments", self.dir, STATE, e)
        next_seq = int(state.get("next_seq", 0))
        watermark = int(state.get("acked_below", 0))
        pending = 0
        for path in sorted(self.dir.glob(SEG_GLOB)):
            seg = self._scan(path, watermark)
            if seg is None:
                continue
            next_seq = max(next_seq, seg.end_seq)
            if seg.unacked == 0:
                path.unlink()
                continue
            self._segments.append(seg)
            self._bytes += seg.size
            pending += seg.unacked
        return next_seq, pending

    def _scan(self, path: Path, watermark: int) -> _Segment | None:
        try:
            first = int(path.stem.split("-", 1)[1])
        except ValueError:
            log.warning("spool %s: ignoring %s (not a segment name)", self.dir, path.name)
            return None
        data = path.read_bytes()
        seg = _Segment(first, path)
        pos = 0
        while pos + REC.size <= len(data):
            n, crc, seq, tlen = REC.unpack_from(data, pos)
            end = pos + REC.size + tlen + n
            if end > len(data) or seq != seg.end_seq or zlib.crc32(data[pos + REC.size : end]) != crc:
                break
            seg.offsets.append(pos)
            acked = seq < watermark
            seg.done.append(1 if acked else 0)
            seg.unacked += 0 if acked else 1
            pos = end
        if pos != len(data):  # a write torn by a kill: keep the whole records before it
            log.warning("spool %s: %s had %d torn bytes at its end; cut", self.dir, path.name, len(data) - pos)
            with open(path, "r+b") as f:
                f.truncate(pos)
        seg.size = pos
        return seg

    # ------------------------------------------------------------ writing

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def append(self, seq: int, topic: str, data: bytes) -> None:
        """Store one record; `seq` must be `next_seq` (the caller put it inside `data`). Never fails for a full disk."""
        t = topic.encode()
        rec = REC.pack(len(data), zlib.crc32(t + data), seq, len(t)) + t + data
        if len(rec) > self.max_bytes // 2:
            raise DataError(f"spool: a {len(rec)}-byte message does not fit a {self.max_bytes}-byte spool")
        with self._lock:
            if seq != self._next_seq:
                raise ValueError(f"spool: expected seq {self._next_seq}, got {seq}")
            while self._bytes + len(rec) > self.max_bytes and self._segments:
                self._drop(self._segments[0])
            if not self._append_disk(seq, rec):
                self._append_memory(seq, rec)
            self._bytes += len(rec)
            self._next_seq = seq + 1

    def _append_disk(self, seq: int, rec: bytes) -> bool:
        if self._disk_error is not None and time.monotonic() < self._disk_retry_at:
            return False
        try:
            if self._lock_fd is None:
                self._open_dir()
            self._check_reserve(len(rec))
            seg = self._disk_segment(seq, len(rec))
            self._write(seg, rec)
        except (OSError, DeviceError) as e:  # DeviceError: another process took the lock meanwhile
            self._disk_failed(e)
            return False
        if self._disk_error is not None:
            log.warning("spool %s: writable again; spooling to disk", self.dir)
            self._disk_error = None
        seg.offsets.append(seg.size)
        seg.done.append(0)
        seg.size += len(rec)
        seg.unacked += 1
        return True

    def _check_reserve(self, n: int) -> None:
        self._since_check += n
        if not self.reserve_bytes or self._since_check < RESERVE_CHECK_BYTES:
            return
        self._since_check = 0
        st = os.statvfs(self.dir)
        free = st.f_bavail * st.f_frsize
        # on a small filesystem (a tmpfs, an SD card partition) a fixed reserve would forbid spooling at all
        reserve = min(self.reserve_bytes, st.f_blocks * st.f_frsize // RESERVE_FS_FRACTION)
        if free - n < reserve:
            self._since_check = RESERVE_CHECK_BYTES  # look again on the next try
            raise OSError(errno.ENOSPC, f"{free >> 10} KiB free, below the spool's {reserve >> 10} KiB reserve")

    def _disk_segment(self, seq: int, n: int) -> _Segment:
        """The on-disk segment to append `n` bytes to: the active one, or a new one."""
        seg = self._active
        if seg is not None and (seg.mem is not None or seg.size + n > self.segment_bytes):
            self._deactivate()
            seg = None
        if seg is None:
            seg = _Segment(seq, self.dir / f"seg-{seq:016d}.log")
            self._active_fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._segments.append(seg)
            self._active = seg
        return seg

    def _write(self, seg: _Segment, rec: bytes) -> None:
        try:
            if os.write(self._active_fd, rec) != len(rec):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        except OSError:
            try:
                os.ftruncate(self._active_fd, seg.size)  # no torn record may hide the ones after it
            except OSError:
                pass  # recovery cuts a torn tail anyway
            if not seg.offsets:  # an empty new file: do not leave it behind
                self._deactivate()
            raise

    def _disk_failed(self, e: Exception) -> None:
        why = getattr(e, "strerror", None) or str(e)
        if self._disk_error is None:
            log.warning("spool %s: cannot write (%s); keeping predictions in memory (at most %d MiB) until it can",
                        self.dir, why, self.memory_max_bytes >> 20)
        self._disk_error = why
        self._disk_retry_at = time.monotonic() + DISK_RETRY_S

    def _append_memory(self, seq: int, rec: bytes) -> None:
        while self._mem_bytes and self._mem_bytes + len(rec) > self.memory_max_bytes:
            self._drop(next(s for s in self._segments if s.mem is not None))
        seg = self._active
        if seg is None or seg.mem is None or seg.size + len(rec) > self.segment_bytes:
            self._deactivate()
            seg = _Segment(seq, None, mem=[])
            self._segments.append(seg)
            self._active = seg
        seg.offsets.append(seg.size)
        seg.mem.append(rec)
        seg.done.append(0)
        seg.size += len(rec)
        seg.unacked += 1
        self._mem_bytes += len(rec)
        self.unspooled += 1

    def _deactivate(self) -> None:
        """No more appends to the active segment; it goes when all its records are acked."""
        seg, self._active = self._active, None
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        if seg is not None and seg.unacked == 0:
            self._remove(seg)

    def _drop(self, seg: _Segment) -> None:
        if seg.unacked:
            log.warning("spool %s full: dropping %d unsent predictions (seq %d..%d)",
                        self.dir, seg.unacked, seg.first_seq, seg.end_seq - 1)
        self.dropped += seg.unacked
        if seg is self._active:
            seg.unacked = 0
            self._deactivate()
        else:
            self._remove(seg)

    def _remove(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        self._bytes -= seg.size
        if seg.mem is not None:
            self._mem_bytes -= seg.size
            return
        # before the unlink: the state must know next_seq once no segment holds it. If even that cannot be
        # written (EIO), unlink anyway: a full disk must get its space back (at worst seqs repeat after a crash)
        self._write_state()
        seg.close()
        try:
            seg.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("spool %s: cannot remove %s: %s", self.dir, seg.path.name, e.strerror or e)

    # ------------------------------------------------------------ reading and acking

    def pending_from(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` unacknowledged records with seq >= `seq`, in seq order."""
        out: list[tuple[int, str, bytes]] = []
        with self._lock:
            for seg in self._segments:
                if seg.end_seq <= seq:
                    continue
                for i in range(max(0, seq - seg.first_seq), len(seg.offsets)):
                    if not seg.done[i]:
                        topic, data = seg.read(i)
                        out.append((seg.first_seq + i, topic, data))
                        if len(out) >= limit:
                            return out
        return out

    def record(self, seq: int) -> tuple[str, bytes] | None:
        """(topic, data) of `seq` while it waits for its ack; None once acked or dropped."""
        with self._lock:
            for seg in self._segments:
                if seg.first_seq <= seq < seg.end_seq:
                    i = seq - seg.first_seq
                    return None if seg.done[i] else seg.read(i)
        return None

    def first_pending(self) -> int:
        """The lowest unacknowledged seq, or next_seq when nothing waits."""
        with self._lock:
            return self._watermark()

    def ack(self, seq: int) -> bool:
        """Mark `seq` delivered; False when it was already acked or dropped."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: list[int]) -> int:
        """Mark several delivered under one lock (the pump acks in batches); returns how many were new."""
        fresh = 0
        with self._lock:
            for seq in seqs:
                for seg in self._segments:
                    if seg.first_seq <= seq < seg.end_seq:
                        i = seq - seg.first_seq
                        if not seg.done[i]:
                            seg.done[i] = 1
                            seg.unacked -= 1
                            fresh += 1
                            if seg.unacked == 0:
                                self._retire(seg)
                        break
            self._state_dirty = self._state_dirty or fresh > 0
        return fresh

    def _retire(self, seg: _Segment) -> None:
        """All of `seg` is acked: delete it, or rotate it first when it is the one being written."""
        if seg is not self._active:
            self._remove(seg)
        elif seg.mem is not None or seg.size >= ROTATE_BYTES:
            self._deactivate()

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(s.unacked for s in self._segments)

    @property
    def recovered(self) -> int:
        """Unacknowledged records found on disk when this spool was opened."""
        return self._recovered

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def disk_error(self) -> str | None:
        """Why new records are held in memory now (None: they go to disk)."""
        return self._disk_error

    def save_state(self) -> None:
        """Persist the ack watermark if it moved (the publisher calls this a few times a second)."""
        with self._lock:
            if self._state_dirty:
                self._write_state()

    def _watermark(self) -> int:
        for seg in self._segments:
            i = seg.done.find(0)
            if i >= 0:
                return seg.first_seq + i
        return self._next_seq

    def _write_state(self) -> None:
        """Atomically if the disk allows, else in place (same size: no new block); never raises."""
        if self._lock_fd is None:
            self._state_dirty = True
            return
        text = json.dumps({"next_seq": self._next_seq, "acked_below": self._watermark()}).ljust(STATE_BYTES).encode()
        path, tmp = self.dir / STATE, self.dir / (STATE + ".tmp")
        try:
            tmp.write_bytes(text)
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.pwrite(fd, text, 0)
                finally:
                    os.close(fd)
            except OSError as e:
                self._state_dirty = True
                if self._state_error is None:
                    log.warning("spool %s: cannot save %s (%s); retrying", self.dir, STATE, e.strerror or e)
                self._state_error = e.strerror or str(e)
                return
        self._state_dirty = False
        self._state_error = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deactivate()
            self._write_state()
            lost = sum(s.unacked for s in self._segments if s.mem is not None)
            if lost:
                log.warning("spool %s: %d unsent predictions were only in memory (the disk refused them); lost",
                            self.dir, lost)
            for seg in self._segments:
                seg.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
