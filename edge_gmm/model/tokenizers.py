"""Tokenizers + compact encoders, one per sensor kind, picked by name from TOKENIZERS (STYLE.md #2).

Each tokenizer splits its work in two:
- `frontend(x)`: fixed, parameter-free (log-mel for audio, identity otherwise). Training runs it once per
  window and caches the result; the exported graph runs it every time.
- `forward(features)`: per-channel normalization (statistics are buffers, set from training data by
  `set_stats`), patching into tokens, a small residual conv encoder. Returns (B, n_tokens, enc_dim).

Tokens are streamable: token j of a window is computed from raw samples [j * hop, j * hop + span) only
(`stream_layout`), by the same ops whether they run over the whole window (training) or over that span alone
(the device, as the samples arrive). So no op mixes tokens: the 1-D encoders act within a token (their blocks
use kernel 1 along the token axis), the series stem is a valid (unpadded) conv whose left context is part of
the span, and the camera's one frame is one encoder call. Mixing tokens is the fusion part's job (gmm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edge_gmm.config import SensorSpec, WindowSpec
from edge_gmm.model.logmel import LogMel
from edge_gmm.model.presets import Preset
from edge_gmm.registry import Registry

TOKENIZERS: Registry[type] = Registry("sensor kind")


@dataclass(frozen=True)
class StreamLayout:
    """How one modality's tokens come from its samples (camera: frames). Token j of a window is computed from
    samples [j * hop, j * hop + span) of that window; one encoder call takes `call_shape` (model layout, no
    batch: a span of samples, or one camera frame) and returns `per_call` tokens."""

    span: int  # raw samples one encoder call reads (camera: 1 frame)
    hop: int  # samples between the starts of consecutive calls (camera: 1 frame)
    tokens: int  # tokens per window
    per_call: int  # tokens per encoder call (camera: grid * grid, otherwise 1)
    call_shape: tuple[int, ...]


class ConvBlock(nn.Module):
    """Residual depthwise-separable conv block, 1-D (B, C, N) or 2-D (B, C, H, W).

    `kernel` 1 on a 1-D token axis keeps each token to its own span; 3 mixes a camera frame's patches."""

    def __init__(self, channels: int, dims: int, kernel: int = 3):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.dw = conv(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.pw1 = conv(channels, 2 * channels, 1)
        self.pw2 = conv(2 * channels, channels, 1)
        self.act = nn.GELU()
        nn.init.zeros_(self.pw2.weight)  # each block starts as identity: stable from the first step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(self.act(self.pw1(self.act(self.dw(x)))))


class Tokenizer(nn.Module):
    stat_dims: tuple[int, ...] = (0, 2)  # feature dims reduced when computing per-channel statistics

    def __init__(self, sensor: SensorSpec, window: WindowSpec, preset: Preset):
        super().__init__()
        self.sensor = sensor
        self.n_samples = window.samples(sensor)

    # -- fixed part
    def frontend(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Raw model-layout shape of one window, without batch."""
        raise NotImplementedError

    def stream_layout(self) -> StreamLayout:
        """1-D tokenizers: one token per call over `self.span` samples every `self.hop` (camera overrides)."""
        channels = self.input_shape[:-1]  # () for audio, (C,) for series
        return StreamLayout(self.span, self.hop, self.n_tokens, 1, (*channels, self.span))

    def _init_stats(self, shape: tuple[int, ...]) -> None:
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def set_stats(self, features: torch.Tensor) -> None:
        """Per-channel mean/std from training features of windows where this modality is present."""
        if features.shape[0] == 0:
            return
        mean = features.mean(dim=self.stat_dims, keepdim=True).reshape(self.mean.shape)
        std = features.std(dim=self.stat_dims, keepdim=True, correction=0).reshape(self.std.shape)
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-4))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.mean) / self.std
        return self.encode(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# Tokens per series window at most: the patch grows to fit. A .ts file has no sample rate (the importer says
# 1 Hz), so a patch length in seconds alone would give 1-sample tokens and hundreds of them per window.
MAX_SERIES_TOKENS = 32
# Left context of the series stem in samples (kernels 7 and 5), at most half the window: a token reads its patch
# plus this many samples before it, all inside the window, so it never sees past the window's start. A preset
# may set its own (Preset.series_context): a latent fusion has no token mixer, so its tokens read further back.
STEM_CONTEXT = 10


def stem_kernels(context: int) -> tuple[int, int]:
    """Two conv kernels whose stacked receptive field is context + 1 samples (10 -> 7, 5)."""
    k2 = 1 + 2 * context // 5
    return 1 + context - (k2 - 1), k2


@TOKENIZERS.register("timeseries")
class SeriesTokenizer(Tokenizer):
    """(B, C, T) -> a conv stem at full resolution (local shape: slopes, peaks, a few samples wide), then
    PatchTST-style patches: conv1d with kernel = stride = patch -> (B, (T - context) // patch, enc).

    Patches alone embed each patch linearly: on small datasets that learned neither shape nor shift
    invariance (GunPoint 64 % vs 93 % with the stem, same budget). The stem is unpadded: its output at sample
    t reads samples t - context..t, so the first `context` samples of a window are context only, and token j
    reads samples [j * patch, j * patch + context + patch): the same values on the device, from that span."""

    def __init__(self, sensor, window, preset):
        super().__init__(sensor, window, preset)
        t = self.n_samples
        self.context = min(preset.series_context or STEM_CONTEXT, t // 2)
        usable = t - self.context  # stem outputs per window
        self.patch = max(1, min(usable, int(round(preset.patch_s * sensor.rate))), -(-usable // MAX_SERIES_TOKENS))
        self.n_tokens = usable // self.patch
        self.span, self.hop = self.context + self.patch, self.patch
        e = preset.enc_dim
        k1, k2 = stem_kernels(self.context)
        self.stem = nn.Sequential(nn.Conv1d(sensor.channels, e, k1), nn.GELU(), nn.Conv1d(e, e, k2), nn.GELU())
        self.embed = nn.Conv1d(e, e, self.patch, stride=self.patch)
        self.blocks = nn.Sequential(*[ConvBlock(e, 1, kernel=1) for _ in range(preset.enc_blocks)])
        self._init_stats((1, sensor.channels, 1))

    @property
    def input_shape(self):
        return (self.sensor.channels, self.n_samples)

    def encode(self, x):
        return self.blocks(self.embed(self.stem(x))).transpose(1, 2)  # (B, N, enc)


@TOKENIZERS.register("imu")
def imu_tokenizer(sensor, window, preset):
    """IMU: a per-channel log power spectrogram (vibration) when the preset sets imu_win_s, else patches."""
    if preset.imu_win_s > 0 and window.samples(sensor) >= 16:
        return SpectrogramTokenizer(sensor, window, preset)
    return SeriesTokenizer(sensor, window, preset)


class SpectrogramTokenizer(Tokenizer):
    """(B, C, T) -> per channel log power spectrum over short frames (B, C*K, F) -> one token per frame."""

    def __init__(self, sensor, window, preset):
        super().__init__(sensor, window, preset)
        # the module is named logmel like the audio one, so quantizers keep every DFT/log front end FP32
        self.logmel = LogMel(sensor.rate, self.n_samples, preset.imu_win_s, preset.imu_hop_s, 0, linear=True)
        rows = sensor.channels * self.logmel.n_bins
        self.n_tokens = self.logmel.frames
        self.span, self.hop = self.logmel.n_fft, self.logmel.hop  # one token per frame
        self.embed = nn.Conv1d(rows, preset.enc_dim, 1)
        self.blocks = nn.Sequential(*[ConvBlock(preset.enc_dim, 1, kernel=1) for _ in range(preset.enc_blocks)])
        self._init_stats((1, rows, 1))

    @property
    def input_shape(self):
        return (self.sensor.channels, self.n_samples)

    def frontend(self, x):
        b, c, t = x.shape
        spec = self.logmel(x.reshape(b * c, t))  # (B*C, K, F)
        return spec.reshape(b, c * spec.shape[1], spec.shape[2])  # (B, C*K, F)

    def encode(self, x):
        return self.blocks(self.embed(x)).transpose(1, 2)  # (B, F, enc)


@TOKENIZERS.register("audio")
class AudioTokenizer(Tokenizer):
    """(B, N) waveform -> in-graph log-mel (B, mels, F) -> patches of `audio_patch_frames` frames."""

    def __init__(self, sensor, window, preset):
        super().__init__(sensor, window, preset)
        self.logmel = LogMel(sensor.rate, self.n_samples, preset.audio_win_s, preset.audio_hop_s,
                             preset.n_mels, preset.audio_fmax)
        frames = self.logmel.frames
        self.patch = max(1, min(frames, preset.audio_patch_frames))
        # a token reads `context` frames before its own patch (inside the window): the first ones are context only
        self.context = min(preset.audio_context_frames, frames - self.patch)
        self.n_tokens = (frames - self.context) // self.patch
        # frame f reads samples [f * hop, f * hop + n_fft) (uncentered), so a token of context + patch frames reads:
        self.span = (self.context + self.patch - 1) * self.logmel.hop + self.logmel.n_fft
        self.hop = self.patch * self.logmel.hop
        self.embed = nn.Conv1d(preset.n_mels, preset.enc_dim, self.context + self.patch, stride=self.patch)
        self.blocks = nn.Sequential(*[ConvBlock(preset.enc_dim, 1, kernel=1) for _ in range(preset.enc_blocks)])
        self._init_stats((1, preset.n_mels, 1))

    @property
    def input_shape(self):
        return (self.n_samples,)

    def frontend(self, x):
        return self.logmel(x)

    def encode(self, x):
        return self.blocks(self.embed(x)).transpose(1, 2)


@TOKENIZERS.register("camera")
class CameraTokenizer(Tokenizer):
    """(B, 3, H, W) in [0, 1] -> conv stem -> grid x grid patch tokens.

    A window holds one frame, and one frame is one encoder call: its blocks mix the patches of that frame."""

    stat_dims = (0, 2, 3)

    def __init__(self, sensor, window, preset):
        super().__init__(sensor, window, preset)
        h, w = sensor.height, sensor.width
        stride = 2 if min(h, w) > 48 else 1  # a 96x96 camera is halved before patching
        hs, ws = (h + stride - 1) // stride, (w + stride - 1) // stride
        grid = max(1, min(preset.camera_grid, hs, ws))
        kh, kw = hs // grid, ws // grid
        self.n_tokens = (hs // kh) * (ws // kw)
        self.stem = nn.Sequential(nn.Conv2d(3, preset.camera_stem, 3, stride=stride, padding=1), nn.GELU())
        self.embed = nn.Conv2d(preset.camera_stem, preset.enc_dim, (kh, kw), stride=(kh, kw))
        self.blocks = nn.Sequential(*[ConvBlock(preset.enc_dim, 2) for _ in range(preset.enc_blocks)])
        self._init_stats((1, 3, 1, 1))

    @property
    def input_shape(self):
        return (3, self.sensor.height, self.sensor.width)

    def stream_layout(self):
        return StreamLayout(1, 1, self.n_tokens, self.n_tokens, self.input_shape)

    def encode(self, x):
        return self.blocks(self.embed(self.stem(x))).flatten(2).transpose(1, 2)  # (B, grid*grid, enc)
