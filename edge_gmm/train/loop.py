"""One training loop for the teacher and the distilled student.

AdamW (no weight decay on norms, embeddings and biases), linear warmup + cosine decay per step over the
plan's steps (train/budget.py: length from the data), class-weighted cross-entropy, modality dropout and
per-modality augmentation, early stopping on validation accuracy (the best epoch's weights are kept),
a resumable state file after every epoch, DDP when launched by torchrun.

Distillation (student): loss = (1 - alpha) * CE(hard labels) + alpha * T^2 * KL(teacher_T || student_T)
+ beta * MSE(proj(student CLS), teacher CLS). With `Distill.teacher` set, the teacher answers every batch on
the same augmented, modality-mixed view the student sees (before modality dropout): on a small set the
student then learns from many views of each example, not from one fixed answer per example (a patient,
consistent teacher). Without it, the cached `logits`/`embedding` rows of the clean windows are the targets.
Either way the student learns to give the all-sensor answer even when dropout hides some of its inputs.
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
from edge_gmm.train.budget import Plan, plan as make_plan
from edge_gmm.train.distributed import Dist
from edge_gmm.train.features import FeatureSet


@dataclass
class Distill:
    """Teacher targets aligned with the training FeatureSet rows; with `teacher` (and its own FeatureSet of the
    same rows, `teacher_feats`) the targets are recomputed on each batch's augmented view instead."""

    logits: dict[str, torch.Tensor]  # task -> (W, C)
    embedding: torch.Tensor  # (W, D_teacher)
    teacher: nn.Module | None = None
    teacher_feats: FeatureSet | None = None


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -1.0
    best_loss: float = float("inf")  # validation loss of the best epoch
    lowest_loss: float = float("inf")  # lowest validation loss of any epoch (patience)
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


def lr_lambda(schedule: dict, warmup_frac: float) -> Callable[[int], float]:
    """Warmup then cosine to 2 % over schedule["total"] steps; a dict, so a time budget can shorten it mid-run."""

    def f(step: int) -> float:
        total = schedule["total"]
        warmup = max(1, int(total * warmup_frac))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only: decaying norms, biases and the learned
    embeddings (time, modality, CLS, resampler queries) only pulls them to zero, which hurts small data most."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.dim() <= 1 or any(k in name for k in ("emb", "cls", "queries"))
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


PROGRESS_EVERY_S = 10.0  # logs and CI have no progress bar: a line at most this often


class Ticker:
    """A progress line at most every PROGRESS_EVERY_S seconds, with an ETA."""

    def __init__(self, desc: str, total_steps: int, log: Callable[[str], None]):
        self.desc, self.total, self.log, self.every = desc, total_steps, log, PROGRESS_EVERY_S
        self.t0 = self.last = time.perf_counter()

    def due(self) -> bool:
        """True (and the clock restarts) when the last line is at least `every` seconds old."""
        now = time.perf_counter()
        if now - self.last < self.every:
            return False
        self.last = now
        return True

    def step(self, done: int, epoch: int, epochs: int, loss: float) -> None:
        if not self.due():
            return
        now = self.last
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        self.log(f"{self.desc}: step {done}/{self.total} ({100 * done / max(1, self.total):.0f} %), epoch {epoch + 1}/{epochs}, "
                 f"loss {loss:.4f}, {now - self.t0:.0f} s elapsed, ETA {eta:.0f} s")


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


def fit(model, train: FeatureSet, val: FeatureSet, spec: TrainSpec, epochs: int = 0, *, modality_dropout_p: float,
        distill: Distill | None = None, state_path: Path | None = None, resume: bool = False,
        dist: Dist = Dist(), desc: str = "train", progress=None, log: Callable[[str], None] = print,
        deadline: float | None = None) -> FitResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch. `epochs` > 0 fixes
    the length, 0 takes it from the step budget; `deadline` (a time.perf_counter() value) shortens the plan
    after the first epoch so that training ends by then."""
    t_start = time.perf_counter()
    device = dist.device
    plan = make_plan(len(train), spec, epochs, dist.world)
    use_features = distill is not None and spec.feature_beta > 0
    aux_task = next((t for t in model.tasks if t.type == "classification"), None) if spec.aux_weight > 0 else None
    objective = Objective(model, distill.embedding.shape[1] if use_features else 0, aux_task).to(device)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(objective, spec.weight_decay), lr=plan.lr)
    per_rank = len(train) // dist.world
    schedule = {"total": plan.steps}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, spec.warmup_frac))
    weights = {
        t.name: (class_weights(train.labels[t.name], len(t.labels)) if spec.class_weighting else torch.ones(len(t.labels))).to(device)
        for t in model.tasks if t.type == "classification"
    }
    shuffle_g = torch.Generator().manual_seed(spec.seed + 11)  # same order on every rank
    aug_g = torch.Generator().manual_seed(spec.seed + 23 + 1000 * dist.rank)
    result = FitResult()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch, bad, perfect = 0, 0, 0
    if resume and state_path is not None and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        objective.load_state_dict(st["objective"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        shuffle_g.set_state(st["shuffle_g"])
        aug_g.set_state(st["aug_g"])
        torch.set_rng_state(st["torch_rng"])
        best_state, bad, perfect = st["best_state"], st["bad"], st.get("perfect", 0)
        result.history, result.best_epoch, result.best_score = st["history"], st["best_epoch"], st["best_score"]
        result.best_loss = st.get("best_loss", float("inf"))
        result.lowest_loss = st.get("lowest_loss", result.best_loss)
        plan = st.get("plan", plan)
        schedule["total"] = plan.steps
        start_epoch = st["epoch"] + 1
        log(f"{desc}: resumed after epoch {start_epoch}")
    # With a handful of validation windows the best epoch is a coin toss among epochs (measured: the student
    # with val acc 1.0 on 8 GunPoint windows ranged 69-96 % on test); then train the whole budget, keep the end.
    select = len(val) >= spec.min_val_windows
    if dist.main:
        log(f"{desc}: {plan.describe()}" + ("" if select else
            f"; {len(val)} validation windows are too few to pick an epoch by: the last epoch is kept"))
    net = objective
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    views = _Views(model, spec, aug_g, distill)
    bar = progress(total=plan.steps, initial=start_epoch * plan.steps_per_epoch, desc=desc) if progress else None
    ticker = Ticker(desc, plan.steps, log if dist.main else (lambda line: None))
    epoch = start_epoch
    while epoch < plan.epochs and (bad < plan.patience or not select):
        t0 = time.perf_counter()
        objective.train()
        perm = torch.randperm(len(train), generator=shuffle_g)[dist.rank :: dist.world][:per_rank]
        total_loss, seen = 0.0, 0
        for s in range(0, per_rank, plan.batch_size):
            idx = perm[s : s + plan.batch_size]
            batch = train.take(idx)
            feats, mask, targets = views(batch, idx)
            mask = modality_dropout(mask, modality_dropout_p, aug_g)
            out = net({m: f.to(device) for m, f in feats.items()}, mask.to(device))
            loss = _loss(model, out, batch, targets, weights, spec, device, mask.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
            if bar is not None:
                bar.update(1)
            ticker.step(epoch * plan.steps_per_epoch + s // plan.batch_size + 1, epoch, plan.epochs, total_loss / seen)
        val_acc = accuracy(model, val, device) if len(val) else {"score": 0.0, "loss": 0.0}
        train_loss = total_loss / max(1, seen)
        if dist.enabled:  # average the logged loss; validation is identical on every rank
            t = torch.tensor([train_loss], device=device)
            torch.distributed.all_reduce(t)
            train_loss = float(t) / dist.world
        row = {"epoch": epoch, "train_loss": train_loss, "val_acc": val_acc["score"], "val_loss": val_acc["loss"],
               "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        result.history.append(row)
        better = val_acc["score"] > result.best_score + 1e-6 or (
            val_acc["score"] >= result.best_score - 1e-6 and val_acc["loss"] < result.best_loss)
        # patience runs out only when neither the accuracy nor the loss improves: a small validation set
        # gives a coarse accuracy (8 windows: steps of 12.5 %) that stalls long before the model stops learning;
        # a loss already near zero (validation at 100 %) improving by less than 0.01 is not progress
        progressing = better or val_acc["loss"] < min(0.99 * result.lowest_loss, result.lowest_loss - 0.01)
        result.lowest_loss = min(result.lowest_loss, val_acc["loss"])
        bad = 0 if progressing else bad + 1
        perfect = perfect + 1 if select and val_acc["score"] >= 1.0 - 1e-9 else 0
        if perfect >= spec.perfect_epochs > 0:  # nothing measurable is left to gain (machine-health: epoch 4 of 40)
            bad = plan.patience
        if better or not select:
            result.best_score, result.best_loss, result.best_epoch = val_acc["score"], val_acc["loss"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_acc['score']:.3f}")
        if deadline is not None and epoch == start_epoch:  # the first epoch tells how many more fit in the budget
            plan = plan.within(row["seconds"], deadline - t0)
            if plan.steps < schedule["total"] and dist.main:
                log(f"{desc}: time budget: cut to {plan.epochs} epochs")
            schedule["total"] = plan.steps
        if dist.main and (plan.epochs <= 20 or ticker.due()):  # every epoch of a short run, else throttled
            log(f"{desc} epoch {epoch + 1}/{plan.epochs}: loss {train_loss:.4f}, val acc {val_acc['score']:.4f}, "
                f"val loss {val_acc['loss']:.4f}, {row['seconds']:.1f} s")
        if state_path is not None and dist.main:
            _save_state(state_path, objective, opt, sched, shuffle_g, aug_g, best_state, (bad, perfect), result, epoch, plan)
        epoch += 1
    if bar is not None:
        bar.close()
    if dist.main:
        stop = "early stop" if select and bad >= plan.patience and epoch < plan.epochs else "budget done"
        log(f"{desc}: {stop} after {epoch} epochs; best val acc {result.best_score:.4f} at epoch {result.best_epoch + 1}")
    model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t_start
    return result


def _save_state(path: Path, objective, opt, sched, shuffle_g, aug_g, best_state, counters, result: FitResult,
                epoch: int, plan: Plan) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"objective": objective.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "shuffle_g": shuffle_g.get_state(), "aug_g": aug_g.get_state(), "torch_rng": torch.get_rng_state(),
                "best_state": best_state, "bad": counters[0], "perfect": counters[1], "history": result.history, "best_epoch": result.best_epoch,
                "best_score": result.best_score, "best_loss": result.best_loss, "lowest_loss": result.lowest_loss, "epoch": epoch,
                "plan": plan}, tmp)
    tmp.replace(path)


class _Views:
    """One training batch -> (features, mask, distillation targets): augmentation and same-class modality
    mixing, and, with an online teacher, the teacher's answer on the same view (its own features go through
    the same random draws: generators seeded alike)."""

    def __init__(self, model, spec: TrainSpec, g: torch.Generator, distill: Distill | None):
        self.model, self.spec, self.g, self.distill = model, spec, g, distill
        models = [model] + ([distill.teacher] if distill is not None and distill.teacher is not None else [])
        # per-channel stds put augmentation noise in each modality's units; fixed during training
        self.stds = {id(m): {x.name: m.tokenizers[x.name].std.detach().cpu() for x in m.sensors} for m in models}
        self.primary = next((t.name for t in model.tasks if t.type == "classification"), None)
        self.mix = spec.augment and spec.modality_mix > 0 and self.primary and len(model.modalities) > 1

    def _view(self, model, feats, mask, labels, aug_seed: int, mix_seed: int):
        g = torch.Generator()
        if self.spec.augment:
            g.manual_seed(aug_seed)
            stds = self.stds[id(model)]
            feats = {x.name: AUGMENTS.get(x.kind)(feats[x.name], stds[x.name], g) for x in model.sensors}
        if self.mix:
            g.manual_seed(mix_seed)
            feats, mask = mix_same_class(feats, mask, labels, self.spec.modality_mix, g)
        return feats, mask

    def __call__(self, batch: FeatureSet, idx: torch.Tensor):
        aug_seed, mix_seed = (int(v) for v in torch.randint(0, 2**62, (2,), generator=self.g))
        labels = batch.labels[self.primary] if self.primary else None
        feats, mask = self._view(self.model, batch.feats, batch.mask, labels, aug_seed, mix_seed)
        d = self.distill
        if d is None:
            return feats, mask, None
        if d.teacher is None:
            return feats, mask, {"logits": {t: v[idx] for t, v in d.logits.items()}, "embedding": d.embedding[idx]}
        tb = d.teacher_feats.take(idx)
        tfeats, tmask = self._view(d.teacher, tb.feats, tb.mask, labels, aug_seed, mix_seed)
        device = next(d.teacher.parameters()).device
        was = d.teacher.training
        d.teacher.eval()
        with torch.no_grad():
            out = d.teacher.forward_features({m: f.to(device) for m, f in tfeats.items()}, tmask.to(device))
        d.teacher.train(was)
        return feats, mask, {"logits": {t: out[f"logits_{t}"] for t in d.logits}, "embedding": out["embedding"]}


def _loss(model, out, batch: FeatureSet, targets: dict | None, weights, spec: TrainSpec, device, batch_mask):
    # every output joins the graph (at weight 0 if it has no loss), so DDP sees every parameter used
    loss = sum(v.sum() for k, v in out.items() if k.startswith("logits_")) * 0.0
    for t in model.tasks:
        key = f"logits_{t.name}"
        if t.type == "classification":
            y = batch.labels[t.name].to(device)
            hard = F.cross_entropy(out[key], y, weight=weights[t.name], ignore_index=-1,
                                   label_smoothing=spec.label_smoothing) if (y >= 0).any() else out[key].sum() * 0
            if targets is not None:
                temp = spec.distill_temperature
                soft_t = F.softmax(targets["logits"][t.name].to(device) / temp, dim=-1)
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
        target = targets["embedding"].to(device)
        loss = loss + spec.feature_beta * F.mse_loss(out["projected"], target)
    return loss
