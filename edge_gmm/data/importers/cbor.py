"""A small CBOR (RFC 8949) decoder: all major types, definite and indefinite lengths, half/single/double
floats; tags are read and their content returned. Errors give the byte offset."""

from __future__ import annotations

import struct

from edge_gmm.errors import DataError

_BREAK = object()


class CborDecoder:
    def __init__(self, data: bytes, source: str = "<cbor>"):
        self.data = data
        self.pos = 0
        self.source = source

    def error(self, msg: str, at: int | None = None) -> DataError:
        return DataError(f"{self.source}: offset {self.pos if at is None else at}: {msg}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.error(f"needs {n} more bytes, {len(self.data) - self.pos} left (truncated)")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def _arg(self, info: int) -> int | None:
        if info < 24:
            return info
        if info in (24, 25, 26, 27):
            n = 1 << (info - 24)
            return int.from_bytes(self.take(n), "big")
        if info == 31:
            return None  # indefinite length
        raise self.error(f"reserved additional info {info}", self.pos - 1)

    def decode(self):
        start = self.pos
        ib = self.take(1)[0]
        major, info = ib >> 5, ib & 31
        if major == 7:
            return self._simple(info, start)
        arg = self._arg(info)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            if arg is None:  # indefinite: chunks of the same major type until break
                parts = []
                while (item := self.decode()) is not _BREAK:
                    parts.append(item)
                return b"".join(parts) if major == 2 else "".join(parts)
            raw = self.take(arg)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("text string is not UTF-8", start) from None
        if major == 4:
            out = []
            if arg is None:
                while (item := self.decode()) is not _BREAK:
                    out.append(item)
                return out
            for _ in range(arg):
                out.append(self._item())
            return out
        if major == 5:
            out = {}
            n = arg
            while n is None or len(out) < n:
                key = self.decode()
                if key is _BREAK and n is None:
                    return out
                if key is _BREAK:
                    raise self.error("unexpected break in a map", start)
                out[key if not isinstance(key, list) else tuple(key)] = self._item()
            return out
        return self._item()  # major 6: a tag; return the tagged content

    def _item(self):
        item = self.decode()
        if item is _BREAK:
            raise self.error("unexpected break", self.pos - 1)
        return item

    def _simple(self, info: int, start: int):
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return struct.unpack(">e", self.take(2))[0]
        if info == 26:
            return struct.unpack(">f", self.take(4))[0]
        if info == 27:
            return struct.unpack(">d", self.take(8))[0]
        if info == 31:
            return _BREAK
        if info == 24:
            return self.take(1)[0]
        if info < 20:
            return info
        raise self.error(f"reserved simple value {info}", start)


def loads(data: bytes, source: str = "<cbor>"):
    dec = CborDecoder(data, source)
    value = dec._item()
    if dec.pos != len(data):
        raise dec.error(f"{len(data) - dec.pos} bytes of trailing data after the top-level item")
    return value


def dumps(obj) -> bytes:
    """A minimal encoder (ints, floats as double, str, bytes, lists, dicts, bool, None) for fixtures and tests."""
    if obj is None:
        return b"\xf6"
    if obj is True or obj is False:
        return b"\xf5" if obj else b"\xf4"
    if isinstance(obj, int):
        return _head(0, obj) if obj >= 0 else _head(1, -1 - obj)
    if isinstance(obj, float):
        return b"\xfb" + struct.pack(">d", obj)
    if isinstance(obj, bytes):
        return _head(2, len(obj)) + obj
    if isinstance(obj, str):
        b = obj.encode("utf-8")
        return _head(3, len(b)) + b
    if isinstance(obj, (list, tuple)):
        return _head(4, len(obj)) + b"".join(dumps(v) for v in obj)
    if isinstance(obj, dict):
        return _head(5, len(obj)) + b"".join(dumps(k) + dumps(v) for k, v in obj.items())
    raise TypeError(f"cannot CBOR-encode {type(obj).__name__}")


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError("integer too large for CBOR")
