"""Faults the virtual MCU injects into its byte stream, so tests and demos see what real links do."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edge_gmm.errors import ConfigError

FAULT_KINDS = ("bitflip", "drop", "garbage", "unplug")


def parse_faults(text: str | None) -> list[str]:
    kinds = [k.strip() for k in (text or "").split(",") if k.strip()]
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        raise ConfigError(f"unknown fault {bad[0]!r}; choose from {', '.join(FAULT_KINDS)} (comma-separated)")
    return kinds


class FaultInjector:
    """Corrupts a fraction `rate` of frames with one of the byte-level faults (bitflip, drop, garbage)."""

    def __init__(self, kinds: list[str], rate: float = 0.02, seed: int = 0):
        self.byte_kinds = [k for k in kinds if k != "unplug"]
        self.unplug = "unplug" in kinds
        self.rate = rate
        self.rng = np.random.default_rng(seed)
        self.counts: Counter[str] = Counter()
        self.spoiled: list[int] = []  # sequence numbers of the frames a fault spoiled (tests compare)

    def apply(self, frame: bytes, seq: int = -1) -> bytes:
        if not self.byte_kinds or self.rng.random() >= self.rate:
            return frame
        kind = self.byte_kinds[self.rng.integers(len(self.byte_kinds))]
        self.counts[kind] += 1
        self.spoiled.append(seq)
        b = bytearray(frame)
        if kind == "bitflip":
            i = int(self.rng.integers(len(b) - 1))  # never the delimiter: one flip spoils exactly one frame
            b[i] ^= 1 << int(self.rng.integers(8))
        elif kind == "drop":
            n = int(self.rng.integers(1, 9))
            i = int(self.rng.integers(max(1, len(b) - 1 - n)))
            del b[i : i + n]
        elif kind == "garbage":
            # a burst of line noise before the frame; it may contain 0x00 and look like frame starts
            b[0:0] = self.rng.integers(0, 256, int(self.rng.integers(8, 65)), dtype=np.uint8).tobytes()
        return bytes(b)
