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


def _stretch_time(x: torch.Tensor, max_frac: float, g) -> torch.Tensor:
    """Resample each sample's last axis by a factor in [1 - max_frac, 1 + max_frac] (linear interpolation,
    circular). A machine's speed differs from session to session: stretching keeps the model from telling
    training sessions apart by their exact rotation frequency instead of learning the fault signature."""
    b, t = x.shape[0], x.shape[-1]
    factor = _uniform((b, 1), 1 - max_frac, 1 + max_frac, g)
    pos = torch.arange(t, dtype=x.dtype)[None] * factor + _uniform((b, 1), 0, t, g)  # (B, T)
    lo = pos.floor()
    frac = (pos - lo).reshape(b, *([1] * (x.dim() - 2)), t)
    i0 = lo.long() % t
    i1 = (i0 + 1) % t
    shape = (b, *([1] * (x.dim() - 2)), t)
    x0 = torch.gather(x, -1, i0.reshape(shape).expand_as(x))
    x1 = torch.gather(x, -1, i1.reshape(shape).expand_as(x))
    return x0 + (x1 - x0) * frac


@AUGMENTS.register("imu")
def augment_imu(x, std, g):  # (B, C, T)
    b = x.shape[0]
    x = _stretch_time(x, 0.2, g)
    x = x * _uniform((b, 1, 1), 0.75, 1.25, g)
    return x + 0.05 * std * torch.randn(x.shape, generator=g)


@AUGMENTS.register("timeseries")
def augment_series(x, std, g):  # (B, C, T)
    # slow series (temperature, current): absolute levels carry the signal, so no gain; a small offset
    # per channel and noise keep the model from memorizing each training session's exact level
    b, c, _ = x.shape
    x = _roll_time(x, 0.1, g)
    x = x + 0.4 * std * _uniform((b, c, 1), -1, 1, g)
    return x + 0.05 * std * torch.randn(x.shape, generator=g)


def _shift_bands(x: torch.Tensor, max_shift: int, g) -> torch.Tensor:
    """Move each sample's spectrum up or down by up to max_shift mel bands (edge bands repeat). (B, mels, F).

    A tone's exact frequency differs from machine to machine (the machine-health whine lies anywhere in
    2.6-3.4 kHz): without this a model learns the few bands its training sessions used and misses the rest."""
    b, mels, _ = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=g)
    idx = (torch.arange(mels)[None] - shift).clamp(0, mels - 1)  # (B, mels)
    return torch.gather(x, 1, idx[:, :, None].expand_as(x))


@AUGMENTS.register("audio")
def augment_logmel(x, std, g):  # (B, mels, F)
    b, mels, frames = x.shape
    x = _shift_bands(x, max(1, mels // 10), g)
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


def mix_same_class(feats: dict[str, torch.Tensor], mask: torch.Tensor, labels: torch.Tensor, p: float, g):
    """Per modality, with probability p per sample, take that modality (and its mask bit) from another
    window of the same class. Windows of one session share nuisance (machine speed, load, ambient
    temperature); mixing modalities across sessions stops the model from identifying a training session
    by its fingerprint and makes each modality's evidence count on its own. (B, ...) -> (B, ...)."""
    if p <= 0:
        return feats, mask
    b = mask.shape[0]
    out, new_mask = {}, mask.clone()
    for i, (m, f) in enumerate(feats.items()):
        source = torch.arange(b)
        for c in labels.unique():
            idx = torch.nonzero(labels == c).flatten()
            if len(idx) > 1 and c >= 0:
                source[idx] = idx[torch.randperm(len(idx), generator=g)]
        take = torch.rand(b, generator=g) < p
        source = torch.where(take, source, torch.arange(b))
        out[m] = f[source]
        new_mask[:, i] = mask[source, i]
    return out, new_mask
