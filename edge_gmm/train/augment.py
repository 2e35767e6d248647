"""Per-modality augmentation on cached front-end features, picked by sensor kind from AUGMENTS.

Every function takes features (B, ...), the modality's per-channel std (for noise in the right units)
and a torch.Generator, and returns new features. Gains act multiplicatively on raw series and images,
additively on log-mel (a gain g on the waveform adds 2*log(g) to log power).
"""

from __future__ import annotations

import torch

from edge_gmm.registry import Registry

AUGMENTS: Registry = Registry("augmentation")


def _uniform(shape, lo, hi, g):
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _roll_time(x: torch.Tensor, max_frac: float, g) -> torch.Tensor:
    """Circularly shift the last axis of each sample by up to max_frac of its length (time shift)."""
    t = x.shape[-1]
    max_shift = int(t * max_frac)
    if max_shift < 1:
        return x
    shift = torch.randint(-max_shift, max_shift + 1, (x.shape[0],), generator=g)
    idx = (torch.arange(t)[None] - shift[:, None]) % t  # (B, T)
    return torch.gather(x, -1, idx.reshape(x.shape[0], *([1] * (x.dim() - 2)), t).expand_as(x))


@AUGMENTS.register("imu")
@AUGMENTS.register("timeseries")
def augment_series(x, std, g):  # (B, C, T)
    b = x.shape[0]
    x = _roll_time(x, 0.1, g)
    x = x * _uniform((b, 1, 1), 0.9, 1.1, g)
    return x + 0.05 * std * torch.randn(x.shape, generator=g)


@AUGMENTS.register("audio")
def augment_logmel(x, std, g):  # (B, mels, F)
    b, mels, frames = x.shape
    x = _roll_time(x, 0.1, g) + _uniform((b, 1, 1), -0.5, 0.5, g)  # time shift, gain
    x = x + 0.05 * std * torch.randn(x.shape, generator=g)
    # SpecAugment-style: one frequency band and one time span per sample set to that sample's mean
    fill = x.mean(dim=(1, 2), keepdim=True)
    f0 = torch.randint(0, mels, (b, 1, 1), generator=g)
    fw = torch.randint(0, max(1, mels // 8) + 1, (b, 1, 1), generator=g)
    t0 = torch.randint(0, frames, (b, 1, 1), generator=g)
    tw = torch.randint(0, max(1, frames // 10) + 1, (b, 1, 1), generator=g)
    fi = torch.arange(mels).reshape(1, -1, 1)
    ti = torch.arange(frames).reshape(1, 1, -1)
    band = ((fi >= f0) & (fi < f0 + fw)) | ((ti >= t0) & (ti < t0 + tw))
    return torch.where(band, fill, x)


@AUGMENTS.register("camera")
def augment_image(x, std, g):  # (B, 3, H, W) in [0, 1]
    b = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform((b, 1, 1, 1), 0.85, 1.15, g) + mean + _uniform((b, 1, 1, 1), -0.05, 0.05, g)
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))  # a one-pixel jitter per batch
    x = torch.roll(x, (dy, dx), dims=(2, 3))
    return x + 0.02 * torch.randn(x.shape, generator=g)


def augment_batch(model, feats: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    return {s.name: AUGMENTS.get(s.kind)(feats[s.name], model.tokenizers[s.name].std, g) for s in model.sensors}


def modality_dropout(mask: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Drop each present modality with probability p, but never all of a sample's modalities. (B, M)."""
    if p <= 0 or mask.shape[1] < 2:
        return mask
    keep = (torch.rand(mask.shape, generator=g) >= p).float()
    dropped = mask * keep
    none_left = dropped.sum(1, keepdim=True) == 0
    return torch.where(none_left, mask, dropped)
