"""Byte stream -> frames. Resynchronizes on the next 0x00 after any corruption and counts what it threw away.

Counters (`LinkStats`): a piece between two delimiters that fails COBS, length or header checks is
`malformed`; one whose CRC does not match is a `crc_error`; a valid frame of an unknown version or type is
`unsupported` (skipped, per the versioning rules). The link above counts what a CRC-valid frame may still
lie about: `bad_descriptor` (a sensor description refused: rate outside the SensorSpec bounds, non-finite
scale; or a forwarder rate that could not be detected) and `bad_time` (SAMPLES whose time maps far from
when they arrived: a corrupt `t_us`). `gaps` sums the sequence numbers missing between
consecutive good frames, `resyncs` counts returns to a good frame after bad bytes, `bytes_dropped` counts
the bytes of every discarded piece including its delimiter.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

from edge_gmm.firmware_bridge.cobs import CobsError, cobs_decode
from edge_gmm.firmware_bridge.protocol import (
    CRC_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_ENCODED,
    PROTOCOL_VERSION,
    Frame,
    FrameType,
    crc32,
)

_KNOWN_TYPES = {int(t) for t in FrameType}


@dataclass
class LinkStats:
    frames: int = 0  # good frames delivered
    bytes_in: int = 0
    crc_errors: int = 0
    malformed: int = 0
    unsupported: int = 0
    gaps: int = 0  # sequence numbers missing between good frames
    resyncs: int = 0
    bytes_dropped: int = 0
    bad_descriptor: int = 0  # descriptors refused (absurd rate or scale); the sensor keeps its last good one
    bad_time: int = 0  # SAMPLES frames dropped because their time maps implausibly far from their arrival

    def as_dict(self) -> dict:
        return asdict(self)


class StreamDecoder:
    """Feed it bytes in any chunking; it returns the complete good frames, in order."""

    def __init__(self, stats: LinkStats | None = None):
        self.stats = stats or LinkStats()
        self._buf = bytearray()
        self._overflowing = False  # inside an over-long run with no delimiter: discard until the next 0x00
        self._last_seq: int | None = None
        self._bad_since_good = False
        self._started = False  # the first piece may be the tail of a frame sent before we connected

    def reset_link(self) -> None:
        """Forget partial bytes (port reopened); the next piece may again be a partial one."""
        if self._buf:
            self.stats.bytes_dropped += len(self._buf)
        self._buf.clear()
        self._overflowing = False
        self._started = False

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes_in += len(data)
        self._buf += data
        if b"\x00" not in data:
            if len(self._buf) > MAX_ENCODED:  # no delimiter for longer than any frame: noise, drop it
                self.stats.bytes_dropped += len(self._buf)
                self._buf.clear()
                self._overflowing = True
                self._bad_since_good = True
            return []
        pieces = self._buf.split(b"\x00")
        self._buf = bytearray(pieces.pop())  # bytes after the last delimiter: an incomplete frame
        out: list[Frame] = []
        for piece in pieces:
            if self._overflowing:  # the tail of an over-long run
                self._overflowing = False
                self._drop(len(piece) + 1, None)
                continue
            if not piece:  # back-to-back delimiters: allowed padding
                continue
            frame, problem = _parse(piece)
            first = not self._started
            self._started = True
            if frame is None:
                # a partial first piece after (re)connecting is expected, not an error
                self._drop(len(piece) + 1, None if first else problem)
                continue
            if self._bad_since_good:
                self.stats.resyncs += 1
                self._bad_since_good = False
            if frame.version != PROTOCOL_VERSION or frame.type not in _KNOWN_TYPES:
                self.stats.unsupported += 1
                self._track_seq(frame.seq)
                continue
            if frame.type != FrameType.COMMAND:  # host -> MCU frames count on the host's own sequence
                self._track_seq(frame.seq)
            self.stats.frames += 1
            out.append(frame)
        return out

    def _drop(self, n: int, problem: str | None) -> None:
        self.stats.bytes_dropped += n
        self._bad_since_good = True
        if problem == "crc":
            self.stats.crc_errors += 1
        elif problem:
            self.stats.malformed += 1

    def _track_seq(self, seq: int) -> None:
        if self._last_seq is not None:
            missing = (seq - self._last_seq - 1) & 0xFFFF
            # a jump of more than half the range is a restart or reordering, not 60k lost frames
            if missing < 0x8000:
                self.stats.gaps += missing
        self._last_seq = seq


def _parse(piece: bytes) -> tuple[Frame | None, str]:
    if len(piece) > MAX_ENCODED:
        return None, "malformed"
    try:
        body = cobs_decode(piece)
    except CobsError:
        return None, "malformed"
    if len(body) < HEADER_SIZE + CRC_SIZE:
        return None, "malformed"
    (crc,) = struct.unpack_from("<I", body, len(body) - CRC_SIZE)
    if crc32(body[:-CRC_SIZE]) != crc:
        return None, "crc"
    version, ftype, sensor, fmt, seq, t_us, count = HEADER.unpack_from(body, 0)
    return Frame(ftype, sensor, seq, t_us, fmt, count, body[HEADER_SIZE:-CRC_SIZE], version), ""
