"""Helpers every subcommand uses: --json output, --out, progress bars that stay quiet in scripts."""

from __future__ import annotations

import json
import sys
from typing import Any


def add_json(p) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON document (for scripts)")


def emit(args, data: Any, text: str | None = None) -> None:
    """Print `data` as one JSON document when --json was given, else `text` (or a key: value listing)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=_jsonable))
        return
    if text is None:
        text = "\n".join(f"{k}: {v}" for k, v in data.items()) if isinstance(data, dict) else str(data)
    print(text)


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain aligned text table."""
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def progress(iterable=None, *, total=None, desc: str = "", disable: bool | None = None, **kw):
    """tqdm when installed and stderr is a terminal (or forced), else the plain iterable."""
    if disable is None:
        disable = not sys.stderr.isatty()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # device installs may lack tqdm
        return iterable if iterable is not None else _NullBar()
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, **kw)


class _NullBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _jsonable(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    from pathlib import Path

    if isinstance(o, Path):
        return str(o)
    import dataclasses

    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def add_ssh_args(p):
    """The ssh and device options `deploy` and `device` share; returns the "device" group for more."""
    g = p.add_argument_group("ssh")
    g.add_argument("--identity", metavar="KEY", help="private key file for ssh (-i)")
    g.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to check the device's host key against")
    g.add_argument("--accept-new-host-key", action="store_true", help="trust and record the device's host key if it is not known yet")
    g = p.add_argument_group("device")
    g.add_argument("--remote-python", default="python3", help="Python on the device (default: python3)")
    g.add_argument("--remote-home", metavar="DIR", help="base directory on the device (default: $EDGE_GMM_HOME there, else ~/edge-gmm)")
    return g
