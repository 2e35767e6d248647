"""Task heads on the fused CLS embedding (B, D), picked by task type from HEADS."""

from __future__ import annotations

import torch
from torch import nn

from edge_gmm.config import TaskSpec
from edge_gmm.registry import Registry

HEADS: Registry[type] = Registry("task type")


@HEADS.register("classification")
class ClassificationHead(nn.Module):
    def __init__(self, task: TaskSpec, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, len(task.labels))

    def forward(self, emb):
        return self.fc(emb)  # (B, classes) logits


@HEADS.register("regression")
class RegressionHead(nn.Module):
    def __init__(self, task: TaskSpec, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, max(1, len(task.targets)))

    def forward(self, emb):
        return self.fc(emb)  # (B, targets)


@HEADS.register("anomaly")
class AnomalyHead(nn.Module):
    """Squared Mahalanobis distance of the embedding to the training embeddings: needs no fault labels.

    `fit(embeddings)` after training sets the mean and (shrunk) precision; until then the score is the
    squared distance to the origin. Output (B, 1); larger = more unusual.
    """

    def __init__(self, task: TaskSpec, dim: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("precision", torch.eye(dim))

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor, shrink: float = 0.1) -> None:
        center = embeddings.mean(0)
        x = embeddings - center
        cov = x.T @ x / max(1, x.shape[0] - 1)
        cov = (1 - shrink) * cov + shrink * torch.eye(cov.shape[0]) * cov.diagonal().mean().clamp_min(1e-6)
        self.center.copy_(center)
        self.precision.copy_(torch.linalg.inv(cov))

    def forward(self, emb):
        d = emb - self.center
        return (torch.matmul(d, self.precision) * d).sum(-1, keepdim=True)
