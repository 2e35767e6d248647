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


def _profile_files() -> dict[str, Path]:
    """name (file stem) -> file; EDGE_GMM_PROFILES folders first."""
    return toml_files("EDGE_GMM_PROFILES", PROFILES_DIR)


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A profile by name (`jetson-orin-nano`) or by path (`devices/jetson-orin-nano.toml`, any folder)."""
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
    load_profile(name_or_path)  # raises the helpful error
    raise AssertionError("unreachable")


def list_profiles() -> list[DeviceProfile]:
    """Every known profile, sorted by name."""
    return [load_config(f, DeviceProfile) for _, f in sorted(_profile_files().items())]


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
