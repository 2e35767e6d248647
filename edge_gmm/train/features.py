"""Windows -> cached front-end features as torch tensors (the `train/` side of the data layer).

`data.windowing.Windows` holds raw numpy arrays in model layout. Training runs each model's fixed front
end (log-mel for audio) once over all windows and trains on the cache; augmentation then works on features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FeatureSet:
    """feats[m]: (W, ...) front-end features; mask (W, M) float; labels[task]: (W,) int64 (-1 = unlabeled)."""

    feats: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def take(self, idx: torch.Tensor) -> "FeatureSet":
        return FeatureSet({m: f[idx] for m, f in self.feats.items()}, self.mask[idx],
                          {t: y[idx] for t, y in self.labels.items()})


def raw_tensors(windows, modalities: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Raw inputs and mask of a Windows object as float32 tensors (no copy where the dtype already fits)."""
    inputs = {m: torch.from_numpy(np.ascontiguousarray(windows.inputs[m], dtype=np.float32)) for m in modalities}
    return inputs, torch.from_numpy(np.ascontiguousarray(windows.mask, dtype=np.float32))


@torch.no_grad()
def featurize(model, windows, batch: int = 256) -> FeatureSet:
    """Run `model`'s front ends over every window once. Labels missing from `windows` become -1."""
    inputs, mask = raw_tensors(windows, model.modalities)
    n = mask.shape[0]
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for s in range(0, n, batch):
        f = model.featurize({m: x[s : s + batch] for m, x in inputs.items()}, mask[s : s + batch])
        for m in model.modalities:
            parts[m].append(f[m])
    feats = {m: torch.cat(p) if p else torch.zeros((0,) + model.tokenizers[m].input_shape) for m, p in parts.items()}
    labels = {}
    for t in model.tasks:
        y = windows.labels.get(t.name) if hasattr(windows, "labels") else None
        labels[t.name] = torch.as_tensor(np.asarray(y)) if y is not None else torch.full((n,), -1, dtype=torch.long)
    return FeatureSet(feats, mask, labels)
