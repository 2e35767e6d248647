"""A run directory on disk and back.

    RUN/run.json            config, sensors, window, tasks, presets, dataset path (everything to rebuild the models)
    RUN/teacher.safetensors weights + normalization buffers of the teacher
    RUN/student.safetensors the distilled student
    RUN/metrics.json        training history and summary figures
    RUN/state/*.pt          resumable training state (optimizer, schedule, RNG), one per role
    RUN/plots/, report.md   written by training and `edge-gmm evaluate`
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gmm.config import FusionConfig, SensorSpec, TaskSpec, WindowSpec, from_dict, to_dict
from edge_gmm.errors import DataError

RUN_FORMAT = "edge-gmm-run"
RUN_VERSION = 1
ROLES = ("teacher", "student")


@dataclass
class Run:
    path: Path
    config: FusionConfig
    sensors: list[SensorSpec]
    window: WindowSpec
    tasks: list[TaskSpec]
    dataset: str
    presets: dict[str, str]
    teacher: Any = None  # GMM with weights loaded (None if not trained yet)
    student: Any = None
    metrics: dict = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.sensors]

    def model(self, role: str):
        return getattr(self, role)


def write_run_json(path: Path, config: FusionConfig, sensors, window, tasks, dataset: str) -> None:
    doc = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "config": to_dict(config),
        "dataset": str(dataset),
        "sensors": to_dict(sensors),
        "window": to_dict(window),
        "tasks": to_dict(tasks),
        "presets": {"teacher": config.model.preset, "student": config.model.student},
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps(doc, indent=2) + "\n")


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"preset": model.preset_name})
    tmp.replace(path)


def load_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a torn or foreign file
        raise DataError(f"{path}: cannot read weights: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape: weights of another model version or preset
        detail = str(e).splitlines()[-1].strip()  # torch: a header line, then one line per mismatched tensor
        raise DataError(f"{path}: weights do not fit preset {model.preset_name!r} ({detail})",
                        hint="the weights come from another training or an older edge-gmm; retrain") from None
    if missing or unexpected:
        raise DataError(f"{path}: weights do not fit preset {model.preset_name!r} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})",
                        hint="the run's run.json and weights come from different trainings; retrain")


def build_role(run: Run, role: str):
    from edge_gmm.model import build_model

    return build_model(run.presets[role], run.sensors, run.window, run.tasks, run.config.model)


def load_run(path: str | Path, roles: tuple[str, ...] = ROLES) -> Run:
    """Read a run directory: config, specs, dataset path, and the trained models (eval mode) it holds."""
    p = Path(path)
    doc_path = p / "run.json"
    if not doc_path.is_file():
        raise DataError(f"{p}: not a training run (no run.json)", hint="train one with 'edge-gmm train --dataset DIR --out RUN'")
    try:
        doc = json.loads(doc_path.read_text())
        if doc.get("format") != RUN_FORMAT:
            raise DataError(f"{doc_path}: not an edge-gmm run (format={doc.get('format')!r})")
        src = str(doc_path)
        run = Run(
            path=p,
            config=from_dict(FusionConfig, doc["config"], source=src),
            sensors=[from_dict(SensorSpec, s, source=src, where="sensors") for s in doc["sensors"]],
            window=from_dict(WindowSpec, doc["window"], source=src, where="window"),
            tasks=[from_dict(TaskSpec, t, source=src, where="tasks") for t in doc["tasks"]],
            dataset=doc["dataset"],
            presets=dict(doc["presets"]),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise DataError(f"{doc_path}: malformed run file: {e}") from None
    metrics = p / "metrics.json"
    if metrics.is_file():
        run.metrics = json.loads(metrics.read_text())
    for role in roles:
        weights = p / f"{role}.safetensors"
        if weights.is_file():
            model = build_role(run, role)
            load_weights(model, weights)
            setattr(run, role, model.eval())
    return run
