"""Write a benchmark's table into docs/benchmarks.md, in a section of its own, with command and machine.

Each script in benchmarks/ calls `publish(name, title, command, table_markdown)`; the section between
`<!-- bench:NAME -->` markers is replaced, the rest of the file kept.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import date
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery table below was printed by the command under it; rerun it to check.\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def md_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def publish(name: str, title: str, command: str, table: str, notes: str = "", *, write: bool = True) -> None:
    """Print the table and notes; with `write` (off under a script's --no-publish) also put them in the doc."""
    print(table)
    if notes:
        print(notes)
    if not write:
        return
    body = f"## {title}\n\n{table}\n\n`{command}` — {machine()}, {date.today().isoformat()}\n"
    if notes:
        body += f"\n{notes}\n"
    section = f"<!-- bench:{name} -->\n{body}<!-- /bench:{name} -->\n"
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
