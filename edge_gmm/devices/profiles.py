"""Device profiles: one TOML per kind of device in the top-level `devices/` folder, picked by name or path.

A profile says what a board is (GPU architecture, compute capability, JetPack / CUDA / TensorRT versions, DLA
cores, memory) and which export target suits it. `deploy` uploads the chosen profile next to the release, so
`edge-gmm engine build --profile PATH` on the device does not depend on where the package was installed.
Torch-free: the device imports this.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_gmm.resources import shipped_dir, toml_files
from edge_gmm.config import DeviceProfile, load_config
from edge_gmm.errors import ConfigError

# The repository's devices/ folder (an editable install or a checkout). EDGE_GMM_PROFILES (os.pathsep-separated
# folders) is searched first, so a user can keep profiles of their own boards elsewhere.
PROFILES_DIR = shipped_dir("devices")
EXPORT_DIR = shipped_dir("export")
# other names people use for the same board -> the profile's name (not listed separately)
ALIASES = {"jetson-orin-nano-8gb": "jetson-orin-nano", "jetson-orin-nx-16gb": "jetson-orin-nx"}
MIN_PYTHON = (3, 8)  # the device side's floor (JetPack 5's system Python, the only one its TensorRT binds)
MATRIX_BEGIN = "<!-- jetpack-matrix:begin (generated from devices/*.toml by `edge-gmm devices list --markdown`) -->"
MATRIX_END = "<!-- jetpack-matrix:end -->"


def _profile_files() -> dict[str, Path]:
    """name (file stem) -> file; EDGE_GMM_PROFILES folders first."""
    return toml_files("EDGE_GMM_PROFILES", PROFILES_DIR)


def load_profile(name_or_path: str | os.PathLike, allow_unsupported: bool = False) -> DeviceProfile:
    """A profile by name (`jetson-orin-nano`) or by path (`devices/jetson-orin-nano.toml`, any folder).

    A board edge-gmm cannot run on (support_problem) is refused, so `deploy` and `engine build` stop with exit 2;
    `devices list/show` pass allow_unsupported to describe it."""
    prof = _load(name_or_path)
    problem = support_problem(prof)
    if problem and not allow_unsupported:
        raise ConfigError(f"device profile {prof.name}: not supported: {problem}",
                          hint="`edge-gmm devices list` shows the supported boards (JetPack 5.1 and newer)")
    return prof


def support_problem(profile: DeviceProfile) -> str:
    """Why edge-gmm cannot run on this board ('' = it can): its Python or its TensorRT is too old."""
    from edge_gmm.export.targets import MIN_TENSORRT, trt_version

    problems = []
    if profile.python and trt_version(profile.python) < MIN_PYTHON:
        problems.append(f"its Python {profile.python} is older than {_dotted(MIN_PYTHON)}, the oldest the device side runs on")
    if has_tensorrt(profile) and trt_version(profile.tensorrt) < MIN_TENSORRT:
        problems.append(f"its TensorRT {profile.tensorrt} lacks the named-tensor API of TensorRT {_dotted(MIN_TENSORRT)}+ that the runner uses")
    return "; ".join(problems)


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _load(name_or_path: str | os.PathLike) -> DeviceProfile:
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith(".toml") or os.sep in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"device profile {text}: no such file", hint="`edge-gmm devices list` shows the known names")
        return load_config(path, DeviceProfile)
    files = _profile_files()
    text = text if text in files else ALIASES.get(text, text)
    if text not in files:
        import difflib

        close = difflib.get_close_matches(text, list(files), n=1)
        raise ConfigError(
            f"unknown device profile {text!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            hint=f"known profiles: {', '.join(sorted(files)) or '(none found)'}; or pass a path to a .toml file",
        )
    return load_config(files[text], DeviceProfile)


def profile_file(name_or_path: str | os.PathLike) -> Path:
    """The TOML file a name or path refers to (what `deploy` uploads)."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_file():
        return path.resolve()
    files = _profile_files()
    name = str(name_or_path) if str(name_or_path) in files else ALIASES.get(str(name_or_path), "")
    if name in files:
        return files[name]
    _load(name_or_path)  # raises the helpful error
    raise AssertionError("unreachable")


def list_profiles() -> list[DeviceProfile]:
    """Every known profile, sorted by name, the unsupported ones included (support_problem says which)."""
    return [load_config(f, DeviceProfile) for _, f in sorted(_profile_files().items())]


def matrix_rows(profs: list[DeviceProfile] | None = None) -> list[dict]:
    """One row per profile: what the board runs and what edge-gmm does on it (`devices list`, docs/deploy.md)."""
    rows = []
    for p in profs if profs is not None else list_profiles():
        problem = support_problem(p)
        rows.append({
            "name": p.name,
            "jetpack": p.jetpack or "-",
            "l4t": p.l4t or "-",
            "tensorrt": p.tensorrt or "-",
            "max_opset": p.max_opset or "-",
            "python": p.python or "-",
            "dla": p.dla_cores,
            "memory_gb": p.memory_gb,
            "target": "-" if problem else p.default_target,
            "supported": "no" if problem else "yes",
        })
    return rows


def matrix_markdown(profs: list[DeviceProfile] | None = None) -> str:
    """The matrix as a Markdown table, unsupported boards last with the reason."""
    profs = list_profiles() if profs is None else profs
    rows = matrix_rows(profs)
    lines = ["| profile | JetPack | L4T | TensorRT | max opset | Python | DLA | memory GB | export target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["supported"] == "no"):
        target = f"`{r['target']}`" if r["supported"] == "yes" else "**not supported**"
        lines.append(f"| `{r['name']}` | {r['jetpack']} | {r['l4t']} | {r['tensorrt']} | {r['max_opset']} | {r['python']} "
                     f"| {r['dla']} | {r['memory_gb']:g} | {target} |")
    notes = [f"- `{p.name}`: not supported: {support_problem(p)}." for p in profs if support_problem(p)]
    return "\n".join(lines + ([""] + notes if notes else []))


def update_matrix(text: str) -> str:
    """`text` (docs/deploy.md) with the generated section between the markers replaced by the current matrix."""
    start, end = text.find(MATRIX_BEGIN), text.find(MATRIX_END)
    if start < 0 or end < start:
        raise ConfigError(f"no generated JetPack matrix section ({MATRIX_BEGIN} ... {MATRIX_END}) in the document")
    return text[: start + len(MATRIX_BEGIN)] + "\n" + matrix_markdown() + "\n" + text[end:]


def has_tensorrt(profile: DeviceProfile) -> bool:
    """Whether the device runs TensorRT (and so `deploy` builds the engine on it)."""
    return bool(profile.tensorrt and profile.gpu)


def pick_precision(profile: DeviceProfile, requested: str) -> tuple[str, str | None]:
    """The precision to build with on this device, and a warning when it differs from the requested one.

    A GPU without fast INT8 (Maxwell, the original Jetson Nano) would run INT8 slower than FP16, so INT8 is
    downgraded to FP16 there; a CPU-only profile keeps what was asked (ONNX Runtime runs INT8 on the CPU).
    """
    if requested == "int8" and has_tensorrt(profile) and not profile.fast_int8:
        return "fp16", (
            f"{profile.name}: the {profile.gpu or 'GPU'} has no fast INT8 path; building FP16 instead of INT8"
        )
    return requested, None


def default_target_exists(profile: DeviceProfile) -> bool:
    """Whether the profile's default export target has a TOML in export/ (for `devices show`)."""
    return (EXPORT_DIR / f"{profile.default_target}.toml").is_file()
