"""Export targets: one TOML each in the top-level `export/` folder, picked by name or by path."""

from __future__ import annotations

import os
from pathlib import Path

from edge_gmm.config import ExportTarget, load_config
from edge_gmm.errors import ConfigError

from edge_gmm.resources import shipped_dir, toml_files

# The shipped export/ folder; EDGE_GMM_TARGETS (os.pathsep-separated folders) is searched first.
TARGETS_DIR = shipped_dir("export")
OPS_TABLE = TARGETS_DIR / "tensorrt-onnx-ops.toml"


def target_files() -> dict[str, Path]:
    """name -> TOML file (EDGE_GMM_TARGETS folders first); the op table is not a target."""
    return toml_files("EDGE_GMM_TARGETS", TARGETS_DIR, skip=(OPS_TABLE.name,))


def load_target(name_or_path: str | os.PathLike) -> ExportTarget:
    """`jetson-orin-nano-int8` or `export/jetson-orin-nano-int8.toml` (any folder) -> ExportTarget."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith(".toml") or os.sep in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"export target {text}: no such file", hint=f"known targets: {', '.join(target_files())}")
        target = load_config(path, ExportTarget, name=path.stem)
    else:
        files = target_files()
        if text not in files:
            import difflib

            close = difflib.get_close_matches(text, list(files), n=1)
            raise ConfigError(
                f"unknown export target {text!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"known targets: {', '.join(sorted(files))}; or pass a path to a .toml file",
            )
        target = load_config(files[text], ExportTarget)
    _check(target, text)
    return target


def list_targets() -> list[ExportTarget]:
    return [load_target(f) for _, f in sorted(target_files().items())]


def _check(t: ExportTarget, where: str) -> None:
    if t.batch < 1:
        raise ConfigError(f"export target {where}: batch must be >= 1")
    if not t.min_opset <= t.opset <= t.max_opset:
        raise ConfigError(f"export target {where}: opset {t.opset} outside [{t.min_opset}, {t.max_opset}]")
    if t.precision == "int8" and t.calibration_windows < 1:
        raise ConfigError(f"export target {where}: an int8 target needs calibration_windows >= 1")
    if t.runtime == "tensorrt" and not t.tensorrt_version:
        raise ConfigError(f"export target {where}: a tensorrt target must state tensorrt_version")
    if t.dla_core >= 0 and t.runtime != "tensorrt":
        raise ConfigError(f"export target {where}: dla_core needs runtime = 'tensorrt'")
