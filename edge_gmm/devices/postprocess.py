"""Turn a model's raw outputs into what a subscriber reads: a label and scores per task.

Per task, from the bundle manifest (`tasks` and the optional `postprocess` section, docs/bundle.md):
- classification: softmax over `logits_<task>` (1, K) → EMA smoothing of the probabilities → hysteresis
  (a new label must lead the current one by `hysteresis` and stay on top `min_hold` windows) → `threshold`
  (a top score below it is reported as label None — "undecided" in the payload — scores kept);
- anomaly: the raw score (first value of `logits_<task>`) is smoothed and compared with `threshold`;
- regression: the values, smoothed, one per target (as `scores`; `score` is the first, `label` None).

Each result has the payload's shape (mqtt.payload.prediction_payload): `{label, score, scores}`.

State lives in one `PostProcessor` per loop; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from edge_gmm.errors import BundleError

UNDECIDED = None  # label when the top score is below the task's threshold


@dataclass
class TaskPost:
    """Post-processing settings of one task. Defaults leave the model's output untouched."""

    name: str
    type: str = "classification"
    labels: list[str] = field(default_factory=list)  # classification labels, or regression targets
    smoothing: float = 0.0  # EMA weight of the past in [0, 1): 0 = none
    hysteresis: float = 0.0  # score lead a new label needs over the current one
    min_hold: int = 1  # consecutive windows a new label must stay on top before it is reported
    threshold: float | None = None  # classification: min top score; anomaly: score above = "anomaly"

    def __post_init__(self):
        if not 0.0 <= self.smoothing < 1.0:
            raise BundleError(f"postprocess of task {self.name!r}: smoothing must be in [0, 1), got {self.smoothing}")
        if self.hysteresis < 0 or self.min_hold < 1:
            raise BundleError(f"postprocess of task {self.name!r}: hysteresis must be >= 0 and min_hold >= 1")


def task_posts_from_manifest(manifest: dict[str, Any]) -> list[TaskPost]:
    """Settings per task: manifest `postprocess` holds defaults and an optional per-task table.

    Accepted shapes: `{"smoothing": 0.5, "tasks": {"state": {"threshold": 0.6}}}` or `{"state": {...}}`.
    """
    post = manifest.get("postprocess") or {}
    allowed = {f.name for f in fields(TaskPost)} - {"name", "type", "labels"}
    defaults = {k: v for k, v in post.items() if k in allowed}
    per_task = dict(post.get("tasks") or {})
    out = []
    for task in manifest.get("tasks", []):
        name = task["name"]
        own = per_task.get(name, post.get(name) if isinstance(post.get(name), dict) else {}) or {}
        unknown = set(own) - allowed
        if unknown:
            raise BundleError(f"manifest postprocess of task {name!r}: unknown key {sorted(unknown)[0]!r}",
                              hint=f"valid keys: {', '.join(sorted(allowed))}")
        kind = task.get("type", "classification")
        labels = list(task.get("labels") or task.get("targets") or [])
        out.append(TaskPost(name=name, type=kind, labels=labels, **{**defaults, **own}))
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Stable softmax over the last axis, in float64 so tiny scores do not underflow to exactly 0."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _TaskState:
    def __init__(self, post: TaskPost):
        self.post = post
        self.ema: np.ndarray | None = None
        self.current: int | None = None  # index of the reported label
        self.candidate: int | None = None
        self.candidate_count = 0

    def smooth(self, values: np.ndarray) -> np.ndarray:
        a = self.post.smoothing
        self.ema = values if self.ema is None or a == 0 else a * self.ema + (1 - a) * values
        return self.ema

    def pick(self, probs: np.ndarray) -> int:
        """Hysteresis: keep the current label unless another leads by the margin for min_hold windows."""
        top = int(np.argmax(probs))
        if self.current is None:
            self.current = top
            return top
        if top == self.current or probs[top] - probs[self.current] <= self.post.hysteresis:
            self.candidate, self.candidate_count = None, 0
            return self.current
        if top == self.candidate:
            self.candidate_count += 1
        else:
            self.candidate, self.candidate_count = top, 1
        if self.candidate_count >= self.post.min_hold:
            self.current, self.candidate, self.candidate_count = top, None, 0
        return self.current


class PostProcessor:
    """Stateful per-task post-processing. `__call__(outputs)` → `{task: result}` (JSON-able)."""

    def __init__(self, posts: list[TaskPost]):
        self.posts = posts
        self._state = {p.name: _TaskState(p) for p in posts}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "PostProcessor":
        return cls(task_posts_from_manifest(manifest))

    def reset(self) -> None:
        self._state = {p.name: _TaskState(p) for p in self.posts}

    def __call__(self, outputs: dict[str, np.ndarray], row: int = 0) -> dict[str, dict[str, Any]]:
        """`outputs` as a runner returns them (`logits_<task>`: (B, K)); `row` picks the batch row."""
        result = {}
        for post in self.posts:
            key = f"logits_{post.name}"
            if key not in outputs:
                raise BundleError(f"model output {key!r} is missing; the bundle's outputs do not match its tasks")
            raw = np.asarray(outputs[key])
            raw = raw[row] if raw.ndim > 1 else raw  # (K,)
            result[post.name] = _PROCESS[post.type](self._state[post.name], raw.astype(np.float64).ravel())
        return result


def _classification(state: _TaskState, logits: np.ndarray) -> dict[str, Any]:
    post = state.post
    probs = state.smooth(softmax(logits))  # (K,)
    idx = state.pick(probs)
    labels = post.labels or [str(i) for i in range(len(probs))]
    score = float(probs[idx])
    label = labels[idx] if post.threshold is None or score >= post.threshold else UNDECIDED
    return {"label": label, "score": score, "scores": {labels[i]: float(p) for i, p in enumerate(probs)}}


def _anomaly(state: _TaskState, raw: np.ndarray) -> dict[str, Any]:
    score = float(state.smooth(raw[:1])[0])
    threshold = state.post.threshold
    label = "anomaly" if threshold is not None and score > threshold else "normal"
    return {"label": label, "score": score, "scores": {"anomaly": score}}


def _regression(state: _TaskState, raw: np.ndarray) -> dict[str, Any]:
    values = state.smooth(raw)
    names = state.post.labels or [str(i) for i in range(len(values))]
    scores = {n: float(v) for n, v in zip(names, values)}
    return {"label": None, "score": float(values[0]) if len(values) else 0.0, "scores": scores}


_PROCESS = {"classification": _classification, "anomaly": _anomaly, "regression": _regression}
