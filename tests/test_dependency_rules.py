"""DESIGN.md: the device-side packages never import torch; nothing imports cli/."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_side_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; "
        "import edge_gmm.data, edge_gmm.devices, edge_gmm.mqtt, edge_gmm.runtime, edge_gmm.firmware_bridge, edge_gmm.config; "
        "import pkgutil, importlib\n"
        "for pkg in ('data', 'devices', 'mqtt', 'runtime', 'firmware_bridge'):\n"
        "    p = importlib.import_module('edge_gmm.' + pkg)\n"
        "    for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_nothing_imports_cli():
    offenders = []
    for path in (REPO / "edge_gmm").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "edge_gmm").parts[:1]:
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:2] in (["import", "edge_gmm.cli"], ["from", "edge_gmm"]) and ("cli" in words[2:4] or words[1].startswith("edge_gmm.cli")):
                offenders.append(f"{path}: {line.strip()}")
            elif words[:1] == ["from"] and len(words) > 1 and words[1].startswith("edge_gmm.cli"):
                offenders.append(f"{path}: {line.strip()}")
    assert offenders == []
