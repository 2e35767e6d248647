"""Where the shipped TOML folders (`export/` targets, `devices/` profiles) live.

In a checkout (or an editable install) they sit at the repository's top level; a wheel installs them under
`<prefix>/share/edge-gmm/` (pyproject's data-files). The checkout wins, so edits there take effect at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped_dir(name: str) -> Path:
    """The folder `name` ('export' or 'devices'): the checkout's if present, else the installed copy."""
    here = REPO_ROOT / name
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "edge-gmm" / name


def toml_files(env_var: str, shipped: Path, *, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """name (file stem) -> TOML file, from the folders in `env_var` (os.pathsep-separated) then `shipped`;
    earlier folders win, so users keep their own targets/profiles beside the shipped ones."""
    import os

    dirs = [Path(p) for p in os.environ.get(env_var, "").split(os.pathsep) if p] + [shipped]
    found: dict[str, Path] = {}
    for d in (d for d in dirs if d.is_dir()):
        for f in sorted(d.glob("*.toml")):
            if f.name not in skip:
                found.setdefault(f.stem, f)
    return found
