"""Audio log-mel front end built from plain ops, so it exports to ONNX and runs inside TensorRT.

conv1d with fixed windowed-DFT weights -> power -> mel matmul -> log. The module attribute holding it is
named `logmel` everywhere; `edge_gmm.model.onnx_export` tags its ONNX nodes with that name so quantizers
can keep them FP32 (FIELD-NOTES: INT8 in this front end wrecks the logits).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_bins: int, n_fft: int, rate: float, n_mels: int, fmax: float) -> torch.Tensor:
    """Triangular HTK-mel filters, (n_bins, n_mels); bin k is at k * rate / n_fft Hz."""
    freqs = torch.arange(n_bins, dtype=torch.float64) * rate / n_fft
    edges = torch.tensor(
        [_mel_to_hz(m) for m in torch.linspace(0.0, _hz_to_mel(fmax), n_mels + 2).tolist()], dtype=torch.float64
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None]) / (center - lower)[None]
    down = (upper[None] - freqs[:, None]) / (upper - center)[None]
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    # a band narrower than one bin would be all zero: give it the nearest bin so no mel row is dead
    for j in range(n_mels):
        if fb[:, j].sum() == 0:
            fb[int(torch.argmin((freqs - center[j]).abs())), j] = 1.0
    return fb.float()


class LogMel(nn.Module):
    """(B, N) waveform in [-1, 1] -> (B, n_mels, frames) log-mel power, frames = 1 + (N - n_fft) // hop."""

    def __init__(self, rate: float, n_samples: int, win_s: float, hop_s: float, n_mels: int, fmax: float = 0.0,
                 linear: bool = False):
        super().__init__()
        self.n_fft = min(n_samples, max(8, int(round(win_s * rate))))
        self.hop = max(1, int(round(hop_s * rate)))
        fmax = min(fmax or rate / 2, rate / 2)
        # keep only the DFT bins the mel bands use: a 4 kHz ceiling halves the cost of the DFT conv
        n_bins = int(math.floor(fmax * self.n_fft / rate)) + 1
        n_bins = min(n_bins, self.n_fft // 2 + 1)
        if linear:  # plain log power spectrum: one output row per DFT bin (used for vibration)
            n_mels = n_bins
        self.n_bins, self.n_mels = n_bins, n_mels
        self.frames = 1 + (n_samples - self.n_fft) // self.hop
        t = torch.arange(self.n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * t / self.n_fft)  # periodic Hann
        k = torch.arange(n_bins, dtype=torch.float64)[:, None]
        phase = 2 * math.pi * k * t[None] / self.n_fft
        dft = torch.cat([torch.cos(phase), -torch.sin(phase)]) * window  # (2*n_bins, n_fft)
        self.register_buffer("dft", dft.float()[:, None, :])  # (2K, 1, n_fft) conv weight
        fb = torch.eye(n_bins) if linear else mel_filterbank(n_bins, self.n_fft, rate, n_mels, fmax)
        self.register_buffer("mel", fb)  # (K, n_mels)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(wave.unsqueeze(1), self.dft, stride=self.hop)  # (B, 2K, F)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        power = re * re + im * im  # (B, K, F)
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # (B, F, n_mels)
        return torch.log(mel + 1e-6).transpose(1, 2)  # (B, n_mels, F)
