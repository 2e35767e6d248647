"""Figures for runs and reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics: dict, path: Path) -> Path:
    """Training loss and validation accuracy per epoch, teacher and student side by side."""
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for role, style in (("teacher", "-"), ("student", "--")):
        hist = metrics.get(role, {}).get("history", [])
        if not hist:
            continue
        ep = [h["epoch"] + 1 for h in hist]
        ax_loss.plot(ep, [h["train_loss"] for h in hist], style, label=role)
        ax_acc.plot(ep, [h["val_acc"] for h in hist], style, label=role)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusions(confusions: dict[str, np.ndarray], labels: list[str], path: Path, title: str = "") -> Path:
    """One row-normalized confusion matrix per model (e.g. teacher, student), counts written in each cell."""
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(confusions)
    size = max(3.2, 0.55 * len(labels) + 1.6)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
    for ax, (name, cm) in zip(axes[0], confusions.items()):
        cm = np.asarray(cm)
        rows = cm.sum(1, keepdims=True).clip(min=1)
        ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] / rows[i, 0] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title=f"{name} {title}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
