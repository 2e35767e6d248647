"""Folder-per-class WAV files: SRC/<class>/*.wav -> one session per file, modality `audio` (mono, 16-bit /
24-bit / 32-bit PCM or 32/64-bit float; several channels are averaged). All files must share one sample
rate: nothing is resampled. Clips are right-aligned like unequal .ts series (policy `pad`), so the
recommended window is one window of the longest clip per file unless --window-s is given."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Session, Stream
from edge_gmm.data.importers.common import Parsed, class_folders, right_aligned_times, session_id, whole_series_window
from edge_gmm.errors import DataError

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples in [-1, 1], sample rate). DataError names the file and byte offset on damage."""
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"{path}: offset 0: not a RIFF/WAVE file")
    fmt = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise DataError(f"{path}: offset {pos}: fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _EXTENSIBLE and size >= 40:
                tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise DataError(f"{path}: offset {pos}: data chunk before fmt chunk")
            end = body + size
            if end > len(data):
                raise DataError(f"{path}: offset {pos}: data chunk says {size} bytes, file ends after {len(data) - body} (truncated)")
            return _decode(path, data[body:end], *fmt), fmt[2]
        pos = body + size + (size & 1)  # chunks are padded to even sizes
    raise DataError(f"{path}: offset {pos}: no data chunk" + (" (truncated?)" if fmt else " and no fmt chunk"))


def _decode(path: Path, raw: bytes, tag: int, channels: int, rate: int, bits: int) -> np.ndarray:
    width = bits // 8
    if channels < 1 or width < 1:
        raise DataError(f"{path}: bad fmt (channels={channels}, bits={bits})")
    usable = len(raw) - len(raw) % (width * channels)
    raw = raw[:usable]
    if tag == _PCM and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif tag == _PCM and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif tag == _PCM and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / (1 << 23)
    elif tag == _PCM and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    elif tag == _FLOAT and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported WAV encoding (format tag {tag}, {bits} bits)", hint="convert with: sox in.wav -b 16 out.wav")
    return x.reshape(-1, channels).mean(axis=1)


def load(src: Path, test: Path | None, opts) -> Parsed:
    items = [(c, f, None) for c, f in class_folders(src, (".wav",))]
    if test:
        items += [(c, f, "test") for c, f in class_folders(test, (".wav",))]
    clips, rate0, first = [], None, None
    for c, f, split in items:
        x, rate = read_wav(f)
        if rate0 is None:
            rate0, first = rate, f
        elif rate != rate0:
            raise DataError(f"{f}: sample rate {rate} Hz differs from {first}'s {rate0} Hz", hint="resample them all to one rate first (sox in.wav -r 16000 out.wav)")
        if x.size == 0:
            raise DataError(f"{f}: no samples")
        clips.append((c, f, split, x))
    labels = sorted({c for c, *_ in clips})
    if len(labels) < 2:
        raise DataError(f"{src}: found one class folder ({labels[0]}); a classifier needs at least two")
    n = [x.size for *_, x in clips]
    name = opts.modality or "audio"
    sessions = []
    for i, (c, f, split, x) in enumerate(clips):
        t = right_aligned_times(x.size, max(n), float(rate0))
        sessions.append((Session(session_id(split or "train", i), {name: Stream(t, x)}, {"class": c}, [], {"file": str(f.relative_to(f.parents[1]))}), split))
    window = whole_series_window(min(n), max(n), float(rate0))
    timeout = max(n) / rate0  # right-aligned clips leave a front gap on purpose: coverage decides
    if opts.window_s:
        window, timeout = WindowSpec(opts.window_s, opts.hop_s or opts.window_s / 2), 0.0
    sensor = SensorSpec(name, "audio", float(rate0), 1, ["FS"], timeout_s=timeout)
    meta = {"source": str(src), "test_source": str(test) if test else None, "format": "wav-folder", "clip_samples": [min(n), max(n)]}
    return Parsed(opts.name or src.name, [sensor], [TaskSpec("class", "classification", labels)], window, sessions, meta)
