"""Consistent Overhead Byte Stuffing: the frame body never contains 0x00, so 0x00 can delimit frames.

Encoding rule (the C library in firmware_bridge/ does exactly the same, byte for byte): a block code
is 1 + the number of non-zero bytes that follow it; a run of 254 non-zero bytes closes its block with
code 0xFF (no implied zero) and opens the next block at once, so a body ending in such a run ends with
a lone 0x01 code.
"""

from __future__ import annotations


class CobsError(ValueError):
    """The bytes between two delimiters are not a valid COBS encoding."""


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    # Each zero-separated part becomes one or more blocks; splitting in C is much faster than a byte loop.
    for part in bytes(data).split(b"\x00"):
        while len(part) >= 254:
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(enc: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            raise CobsError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise CobsError("COBS block runs past the end of the frame")
        out += enc[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def max_encoded_len(body_len: int) -> int:
    """Worst-case encoded length of a body of `body_len` bytes (without the 0x00 delimiter)."""
    return body_len + body_len // 254 + 1
