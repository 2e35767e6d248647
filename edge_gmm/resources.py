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
