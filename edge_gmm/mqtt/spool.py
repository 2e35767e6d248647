"""On-disk spool: predictions wait here until the broker has acknowledged them (PUBACK).

Every prediction is written here *before* it is handed to the MQTT client, and leaves only when its
PUBACK arrives; so a broker that is down, a broker restart and a restart of our own process all end with
the waiting predictions delivered, in sequence order.

Layout of `directory`:
    seg-<first seq, 16 digits>.log   records appended in seq order: header REC + topic + payload
    state.json                       {"next_seq": N, "acked_below": W}, replaced atomically
    lock                             flock'ed while a process owns the spool

The spool is bounded in bytes: when a new record would not fit, whole segments are dropped oldest first
and their unacknowledged records are counted in `dropped`. Segments are small (max_bytes / 8, at most
4 MiB) so a drop loses little. Acks are remembered on disk as the watermark `acked_below` (saved at most
twice a second and on close): after a crash, records acknowledged since the last save are sent again, so
delivery is at-least-once and the subscriber reports those as duplicates, never as gaps.
Writes are not fsync'ed: they survive a process kill (page cache), not a power cut.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from edge_gmm.errors import DataError, DeviceError

log = logging.getLogger(__name__)

REC = struct.Struct("<IIQH")  # payload bytes, crc32(topic + payload), seq, topic bytes
SEG_GLOB = "seg-*.log"
STATE = "state.json"


@dataclass
class _Segment:
    first_seq: int
    path: Path
    offsets: list[int] = field(default_factory=list)  # record i (seq first_seq + i) starts here
    done: bytearray = field(default_factory=bytearray)  # 1 = acked (or below the watermark)
    size: int = 0
    unacked: int = 0
    fd: int | None = None  # read fd, opened lazily

    @property
    def end_seq(self) -> int:  # one past the last record
        return self.first_seq + len(self.offsets)

    def read(self, i: int) -> tuple[str, bytes]:
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


class Spool:
    """Thread-safe: the caller appends, the publisher's pump reads and acks."""

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20, segment_bytes: int | None = None):
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        if self.max_bytes < 4096:
            raise DataError(f"spool: max_bytes must be at least 4096, got {max_bytes}")
        self.segment_bytes = segment_bytes or max(1024, min(4 << 20, self.max_bytes // 8))
        self.dropped = 0
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._active_fd: int | None = None  # append fd of self._segments[-1] while it takes records
        self._bytes = 0
        self._state_dirty = False
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DeviceError(f"spool {self.dir}: {e.strerror or e}", hint="pick a writable spool directory") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DeviceError(
                f"spool {self.dir} is in use by another process",
                hint="run one publisher per device id, or give this one its own spool directory",
            ) from None
        self._next_seq, self._recovered = self._recover()

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
        """Store one record; `seq` must be `next_seq` (the caller put it inside `data`)."""
        t = topic.encode()
        rec = REC.pack(len(data), zlib.crc32(t + data), seq, len(t)) + t + data
        if len(rec) > self.max_bytes // 2:
            raise DataError(f"spool: a {len(rec)}-byte message does not fit a {self.max_bytes}-byte spool")
        with self._lock:
            if seq != self._next_seq:
                raise ValueError(f"spool: expected seq {self._next_seq}, got {seq}")
            active = self._segments[-1] if self._active_fd is not None else None
            if active is not None and active.size + len(rec) > self.segment_bytes:
                self._close_active()
                active = None
            while self._bytes + len(rec) > self.max_bytes and self._segments:
                if self._active_fd is not None and len(self._segments) == 1:
                    self._close_active()  # removes it when fully acked: look again
                    active = None
                    continue
                self._drop_oldest()
            if active is None:
                active = _Segment(seq, self.dir / f"seg-{seq:016d}.log")
                self._active_fd = os.open(active.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                self._segments.append(active)
            try:
                if os.write(self._active_fd, rec) != len(rec):
                    raise OSError(28, "short write (disk full?)")
            except OSError as e:
                os.ftruncate(self._active_fd, active.size)  # no torn record may hide the ones after it
                raise DeviceError(f"spool {self.dir}: cannot write: {e.strerror or e}",
                                  hint="free disk space or point the spool at another disk") from None
            active.offsets.append(active.size)
            active.done.append(0)
            active.size += len(rec)
            active.unacked += 1
            self._bytes += len(rec)
            self._next_seq = seq + 1

    def _close_active(self) -> None:
        os.close(self._active_fd)
        self._active_fd = None
        seg = self._segments[-1]
        if seg.unacked == 0:
            self._remove(seg)

    def _drop_oldest(self) -> None:
        seg = self._segments[0]
        if seg.unacked:
            log.warning("spool %s full: dropping %d unsent predictions (seq %d..%d)",
                        self.dir, seg.unacked, seg.first_seq, seg.end_seq - 1)
        self.dropped += seg.unacked
        self._remove(seg)

    def _remove(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        self._bytes -= seg.size
        self._write_state()  # before the unlink: the state must know next_seq once no segment holds it
        seg.close()
        seg.path.unlink(missing_ok=True)

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
                            if seg.unacked == 0 and not (self._active_fd is not None and seg is self._segments[-1]):
                                self._remove(seg)
                        break
            self._state_dirty = self._state_dirty or fresh > 0
        return fresh

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
        tmp = self.dir / (STATE + ".tmp")
        tmp.write_text(json.dumps({"next_seq": self._next_seq, "acked_below": self._watermark()}))
        os.replace(tmp, self.dir / STATE)
        self._state_dirty = False

    def close(self) -> None:
        with self._lock:
            if self._lock_fd is None:
                return
            if self._active_fd is not None:
                self._close_active()
            self._write_state()
            for seg in self._segments:
                seg.close()
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
