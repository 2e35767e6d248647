"""What this machine is, for `edge-gmm doctor`: L4T/JetPack, TensorRT, CUDA, power mode, free memory.

Every probe is optional and bounded: a fact this machine cannot tell is None, never an error (a laptop has no
/etc/nv_tegra_release, a container no nvpmodel).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

TEGRA_RELEASE = "/etc/nv_tegra_release"
CUDA_VERSION_FILES = ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt")
# L4T (major.minor) -> JetPack release; what NVIDIA's release notes pair (docs/deploy.md has the matrix)
JETPACK_OF_L4T = (("32.6", "4.6"), ("32.7", "4.6.1"), ("35.1", "5.0.2"), ("35.2", "5.1"), ("35.3", "5.1.1"), ("35.4", "5.1.2"),
                  ("35.5", "5.1.3"), ("35.6", "5.1.4"), ("36.3", "6.0"), ("36.4.0", "6.1"), ("36.4", "6.2"),
                  ("38.2", "7.0"))


def collect(tegra_release: str = TEGRA_RELEASE) -> dict:
    """Every fact, each None where this machine cannot tell."""
    l4t = l4t_version(tegra_release)
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "l4t": l4t,
        "jetpack": jetpack_of(l4t),
        "tensorrt": _module_version("tensorrt"),
        "onnxruntime": _module_version("onnxruntime"),
        "cuda": cuda_version(),
        "power_mode": power_mode(),
        "mem_available_mb": mem_available_mb(),
    }


def l4t_version(path: str = TEGRA_RELEASE) -> str | None:
    """'36.4.3' from '# R36 (release), REVISION: 4.3, GCID: ...'."""
    try:
        first = Path(path).read_text(errors="replace").splitlines()[0]
        major = first.split("R", 1)[1].split()[0]
        rev = first.split("REVISION:", 1)[1].split(",")[0].strip()
    except (OSError, IndexError):
        return None
    return f"{major}.{rev}"


def jetpack_of(l4t: str | None) -> str | None:
    """The JetPack release of an L4T version (longest matching prefix), None when unknown."""
    if not l4t:
        return None
    hits = [(len(prefix), jp) for prefix, jp in JETPACK_OF_L4T if l4t == prefix or l4t.startswith(prefix + ".")]
    return max(hits)[1] if hits else None


def cuda_version() -> str | None:
    """The CUDA toolkit's version (JetPack installs it under /usr/local/cuda)."""
    import json

    for f in CUDA_VERSION_FILES:
        try:
            text = Path(f).read_text()
        except OSError:
            continue
        if f.endswith(".json"):
            try:
                return str(json.loads(text)["cuda"]["version"])
            except (ValueError, KeyError, TypeError):
                continue
        return text.strip().split()[-1] if text.strip() else None  # "CUDA Version 10.2.89"
    return None


def power_mode() -> str | None:
    """`nvpmodel -q`'s mode name ('MAXN', '15W', ...): latency depends on it, so the report says which."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "Power Mode" in line and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def mem_available_mb(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable: on a Jetson the GPU shares this memory, so it bounds the engine too."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _module_version(module: str) -> str | None:
    """The version of an importable engine, without importing it when it is absent."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(getattr(__import__(module), "__version__", "unknown"))
    except Exception:  # a broken install (TensorRT without its libraries) reports as absent
        return None
