"""One training loop for the teacher and the distilled student.

AdamW, linear warmup + cosine decay per step, class-weighted cross-entropy, modality dropout and
per-modality augmentation, early stopping on validation accuracy (the best epoch's weights are kept),
a resumable state file after every epoch, DDP when launched by torchrun.

Distillation (student): loss = (1 - alpha) * CE(hard labels) + alpha * T^2 * KL(teacher_T || student_T)
+ beta * MSE(proj(student CLS), teacher CLS), where the teacher's logits and CLS embedding were computed
once on the clean, full-sensor training windows: the student learns to give the all-sensor answer even
when modality dropout hides some of its inputs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edge_gmm.config import TrainSpec
from edge_gmm.train.augment import AUGMENTS, mix_same_class, modality_dropout
from edge_gmm.train.distributed import Dist
from edge_gmm.train.features import FeatureSet


@dataclass
class Distill:
    """Teacher targets aligned with the training FeatureSet rows."""

    logits: dict[str, torch.Tensor]  # task -> (W, C)
    embedding: torch.Tensor  # (W, D_teacher)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -1.0
    best_loss: float = float("inf")
    seconds: float = 0.0


class Objective(nn.Module):
    """Model + training-only parts: the feature-distillation projector (student) and per-modality auxiliary
    heads (`aux_weight` > 0: each modality's pooled tokens classify the primary task on their own, so a
    modality that is slower to learn is not starved by an easier one). What DDP wraps."""

    def __init__(self, model, teacher_dim: int = 0, aux_task=None):
        super().__init__()
        self.model = model
        self.feature_proj = nn.Linear(model.embed_dim, teacher_dim) if teacher_dim else None
        self.aux_task = aux_task
        self.aux = nn.ModuleDict({m: nn.Linear(model.embed_dim, len(aux_task.labels)) for m in model.modalities}) \
            if aux_task is not None else None

    def forward(self, feats, mask):
        out = self.model.forward_features(feats, mask, return_tokens=self.aux is not None)
        if self.feature_proj is not None:
            out["projected"] = self.feature_proj(out["embedding"])
        if self.aux is not None:
            for m, head in self.aux.items():
                out[f"aux_{m}"] = head(out.pop(f"pooled_{m}"))
        return out


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalized to mean 1 over present classes, clipped to [0.2, 5]."""
    y = labels[labels >= 0]
    counts = torch.bincount(y, minlength=n_classes).float()
    w = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    return w.clamp(0.2, 5.0)


def lr_lambda(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_frac))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


@torch.no_grad()
def predict(model, data: FeatureSet, batch: int = 512, device=torch.device("cpu"), mask=None) -> dict[str, torch.Tensor]:
    """Eval-mode outputs over a FeatureSet, concatenated on CPU. `mask` overrides the data's mask."""
    was = model.training
    model.eval()
    mask = data.mask if mask is None else mask
    outs: dict[str, list[torch.Tensor]] = {}
    for s in range(0, len(data), batch):
        feats = {m: f[s : s + batch].to(device) for m, f in data.feats.items()}
        o = model.forward_features(feats, mask[s : s + batch].to(device))
        for k, v in o.items():
            outs.setdefault(k, []).append(v.cpu())
    model.train(was)
    return {k: torch.cat(v) for k, v in outs.items()}


def accuracy(model, data: FeatureSet, device=torch.device("cpu")) -> dict[str, float]:
    """Accuracy per classification task on labeled windows; 'score' = their mean, 'loss' = mean cross-entropy
    (early stopping: higher score wins, a lower loss breaks ties, e.g. once validation accuracy reaches 100 %)."""
    out = predict(model, data, device=device)
    accs, losses = {}, []
    for t in model.tasks:
        if t.type != "classification":
            continue
        y = data.labels[t.name]
        ok = y >= 0
        if ok.any():
            logits = out[f"logits_{t.name}"][ok]
            accs[t.name] = float((logits.argmax(-1) == y[ok]).float().mean())
            losses.append(float(F.cross_entropy(logits, y[ok])))
    accs["score"] = sum(accs.values()) / len(accs) if accs else 0.0
    accs["loss"] = sum(losses) / len(losses) if losses else 0.0
    return accs


def fit(model, train: FeatureSet, val: FeatureSet, spec: TrainSpec, epochs: int, *, modality_dropout_p: float,
        distill: Distill | None = None, state_path: Path | None = None, resume: bool = False,
        dist: Dist = Dist(), desc: str = "train", progress=None, log: Callable[[str], None] = print) -> FitResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch."""
    t_start = time.perf_counter()
    device = dist.device
    use_features = distill is not None and spec.feature_beta > 0
    aux_task = next((t for t in model.tasks if t.type == "classification"), None) if spec.aux_weight > 0 else None
    objective = Objective(model, distill.embedding.shape[1] if use_features else 0, aux_task).to(device)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=spec.weight_decay)
    per_rank = len(train) // dist.world
    steps_per_epoch = max(1, math.ceil(per_rank / spec.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch * epochs, spec.warmup_frac))
    weights = {
        t.name: (class_weights(train.labels[t.name], len(t.labels)) if spec.class_weighting else torch.ones(len(t.labels))).to(device)
        for t in model.tasks if t.type == "classification"
    }
    shuffle_g = torch.Generator().manual_seed(spec.seed + 11)  # same order on every rank
    aug_g = torch.Generator().manual_seed(spec.seed + 23 + 1000 * dist.rank)
    result = FitResult()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch, bad = 0, 0
    if resume and state_path is not None and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        objective.load_state_dict(st["objective"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        shuffle_g.set_state(st["shuffle_g"])
        aug_g.set_state(st["aug_g"])
        torch.set_rng_state(st["torch_rng"])
        best_state, bad = st["best_state"], st["bad"]
        result.history, result.best_epoch, result.best_score = st["history"], st["best_epoch"], st["best_score"]
        result.best_loss = st.get("best_loss", float("inf"))
        start_epoch = st["epoch"] + 1
        log(f"{desc}: resumed after epoch {start_epoch}")
    net = objective
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    stds = {m: model.tokenizers[m].std.detach().cpu() for m in model.modalities}
    primary = next((t.name for t in model.tasks if t.type == "classification"), None)
    bar = progress(total=epochs, initial=start_epoch, desc=desc) if progress else None
    for epoch in range(start_epoch, epochs):
        if bad >= spec.patience:
            break
        t0 = time.perf_counter()
        objective.train()
        perm = torch.randperm(len(train), generator=shuffle_g)[dist.rank :: dist.world][:per_rank]
        total_loss, seen = 0.0, 0
        for s in range(0, per_rank, spec.batch_size):
            idx = perm[s : s + spec.batch_size]
            batch = train.take(idx)
            feats = batch.feats
            if spec.augment:
                feats = {x.name: AUGMENTS.get(x.kind)(feats[x.name], stds[x.name], aug_g) for x in model.sensors}
            mask = batch.mask
            if spec.augment and spec.modality_mix > 0 and primary and len(model.modalities) > 1:
                feats, mask = mix_same_class(feats, mask, batch.labels[primary], spec.modality_mix, aug_g)
            mask = modality_dropout(mask, modality_dropout_p, aug_g)
            out = net({m: f.to(device) for m, f in feats.items()}, mask.to(device))
            loss = _loss(model, out, batch, idx, weights, spec, distill, device, mask.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        val_acc = accuracy(model, val, device) if len(val) else {"score": 0.0, "loss": 0.0}
        train_loss = total_loss / max(1, seen)
        if dist.enabled:  # average the logged loss; validation is identical on every rank
            t = torch.tensor([train_loss], device=device)
            torch.distributed.all_reduce(t)
            train_loss = float(t) / dist.world
        row = {"epoch": epoch, "train_loss": train_loss, "val_acc": val_acc["score"], "val_loss": val_acc["loss"],
               "lr": sched.get_last_lr()[0],
               "seconds": time.perf_counter() - t0}
        result.history.append(row)
        better = val_acc["score"] > result.best_score + 1e-6 or (
            val_acc["score"] >= result.best_score - 1e-6 and val_acc["loss"] < result.best_loss)
        if better:
            result.best_score, result.best_loss, result.best_epoch, bad = val_acc["score"], val_acc["loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if dist.main:
            log(f"{desc} epoch {epoch + 1}/{epochs}: loss {train_loss:.4f}, val acc {val_acc['score']:.4f}, "
                f"val loss {val_acc['loss']:.4f}, {row['seconds']:.1f} s")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_acc['score']:.3f}")
        if state_path is not None and dist.main:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = state_path.with_suffix(".tmp")
            torch.save({"objective": objective.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "shuffle_g": shuffle_g.get_state(), "aug_g": aug_g.get_state(), "torch_rng": torch.get_rng_state(),
                        "best_state": best_state, "bad": bad, "history": result.history, "best_epoch": result.best_epoch,
                        "best_score": result.best_score, "best_loss": result.best_loss, "epoch": epoch}, tmp)
            tmp.replace(state_path)
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t_start
    return result


def _loss(model, out, batch: FeatureSet, idx, weights, spec: TrainSpec, distill: Distill | None, device, batch_mask):
    # every output joins the graph (at weight 0 if it has no loss), so DDP sees every parameter used
    loss = sum(v.sum() for k, v in out.items() if k.startswith("logits_")) * 0.0
    for t in model.tasks:
        key = f"logits_{t.name}"
        if t.type == "classification":
            y = batch.labels[t.name].to(device)
            hard = F.cross_entropy(out[key], y, weight=weights[t.name], ignore_index=-1,
                                   label_smoothing=spec.label_smoothing) if (y >= 0).any() else out[key].sum() * 0
            if distill is not None:
                temp = spec.distill_temperature
                soft_t = F.softmax(distill.logits[t.name][idx].to(device) / temp, dim=-1)
                soft = F.kl_div(F.log_softmax(out[key] / temp, dim=-1), soft_t, reduction="batchmean") * temp * temp
                loss = loss + (1 - spec.distill_alpha) * hard + spec.distill_alpha * soft
            else:
                loss = loss + hard
        elif t.type == "regression" and t.name in batch.labels:
            y = batch.labels[t.name].to(device).float().reshape(out[key].shape[0], -1)
            ok = torch.isfinite(y).all(-1)
            if ok.any():
                loss = loss + F.mse_loss(out[key][ok], y[ok])
        # anomaly heads train nothing: they are fitted on embeddings after training
    aux = [k for k in out if k.startswith("aux_")]
    if aux:  # per-modality auxiliary classification, on the windows where that modality is present
        y = batch.labels[next(t.name for t in model.tasks if t.type == "classification")].to(device)
        for i, k in enumerate(aux):
            present = batch_mask[:, i] * (y >= 0).float()
            ce = F.cross_entropy(out[k], y.clamp_min(0), reduction="none")
            loss = loss + spec.aux_weight / len(aux) * (ce * present).sum() / present.sum().clamp_min(1.0)
    if "projected" in out:
        target = distill.embedding[idx].to(device)
        loss = loss + spec.feature_beta * F.mse_loss(out["projected"], target)
    return loss
