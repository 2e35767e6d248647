"""Export targets: one TOML each in the top-level `export/` folder, picked by name or by path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from edge_gmm.config import ExportTarget, load_config, read_mapping
from edge_gmm.errors import ConfigError
from edge_gmm.resources import shipped_dir, toml_files
from edge_gmm.runtime.runners.trt_plan import TRT_APIS

# The shipped export/ folder; EDGE_GMM_TARGETS (os.pathsep-separated folders) is searched first.
TARGETS_DIR = shipped_dir("export")
OPS_TABLE = TARGETS_DIR / "tensorrt-onnx-ops.toml"
# The oldest TensorRT the runner can drive (trt_plan's API table: the named-tensor API is 8.5+).
MIN_TENSORRT = TRT_APIS[0].since
# Node-name pattern of a decomposed LayerNormalization (export/rewrites.py); kept FP32 under FP16 because its
# squared deviation overflows fp16 where the native layer would not.
DECOMPOSED_FP32 = "ln_fp32/"


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


def list_targets(include_unsupported: bool = False) -> list[ExportTarget]:
    """Every shipped target that `export` accepts (with include_unsupported, also those it refuses)."""
    out = []
    for _, f in sorted(target_files().items()):
        raw = load_config(f, ExportTarget)
        if not support_problem(raw):
            out.append(load_target(f))
        elif include_unsupported:
            out.append(raw)
    return out


def trt_version(text: str) -> tuple[int, ...]:
    """'8.5' -> (8, 5); '10.x' -> (10,); '' -> (0,)."""
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)


def uses_tensorrt(target) -> bool:
    return bool(getattr(target, "tensorrt_version", "")) and getattr(target, "runtime", "tensorrt") == "tensorrt"


def op_table(path: Path = OPS_TABLE) -> dict[str, str]:
    """op -> the TensorRT version whose ONNX parser first takes it."""
    return {k: str(v) for k, v in read_mapping(path).get("ops", {}).items()}


def op_supported(op: str, target, table: dict[str, str] | None = None) -> bool:
    """Whether the target's TensorRT parser takes `op` (default domain); an ORT target takes every op."""
    if not uses_tensorrt(target):
        return True
    since = (table if table is not None else op_table()).get(op)
    return since is not None and trt_version(since) <= trt_version(target.tensorrt_version)


def support_problem(t: ExportTarget) -> str:
    """Why edge-gmm cannot serve this target ('' = it can)."""
    if uses_tensorrt(t) and trt_version(t.tensorrt_version) < MIN_TENSORRT:
        return (f"TensorRT {t.tensorrt_version} is not supported: the runner needs TensorRT "
                f"{'.'.join(map(str, MIN_TENSORRT))}+ (named-tensor API); JetPack 4 boards (Jetson Nano, TensorRT 8.2, "
                "Python 3.6) cannot run edge-gmm")
    return ""


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
    problem = support_problem(t)
    if problem:
        raise ConfigError(f"export target {where}: {problem}",
                          hint="pick a JetPack 5.1+ target (`edge-gmm devices list` shows the matrix)")
    if not op_supported("LayerNormalization", t) and DECOMPOSED_FP32 not in t.fp32_layers:
        t.fp32_layers = [*t.fp32_layers, DECOMPOSED_FP32]  # the decomposed LayerNorm stays FP32 (see above)
