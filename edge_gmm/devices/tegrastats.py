"""Jetson telemetry from `tegrastats`: CPU/GPU load, memory, temperatures and power rails, as flat metrics.

`tegrastats` prints one line per interval; its fields differ between boards and JetPack releases:
  Nano (JP4):  RAM 1533/3956MB (lfb 132x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [10%@102,...]
               EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 PLL@29C CPU@31.5C ... POM_5V_IN 2154/2154 POM_5V_GPU 0/0
  Xavier (JP5): ... CPU [4%@1190,...,off,off] EMC_FREQ 0% GR3D_FREQ 0% AUX@37.5C ... VDD_IN 4123/4123 VDD_SOC 1225/1225
  Orin (JP5/6): [MM-DD-YYYY HH:MM:SS] ... GR3D_FREQ 0%@[305,305] VIC_FREQ 729 ... tj@47.2C ... VDD_IN 4783mW/4783mW
Rails are "now/average" in mW (with or without the unit); a temperature of -256C means the zone is powered off.
Unknown tokens are skipped, so a newer JetPack adding fields does not break the parse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from typing import Any

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"(\d+)%@(\d+)")
# "GR3D_FREQ 0%", "GR3D_FREQ 12%@76", "GR3D_FREQ 0%@[305,305]" (one clock per GPC on Orin)
_LOAD = re.compile(r"\b(EMC|GR3D)_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b((?:VDD|VIN|POM|VDDQ)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")
_OFF_TEMP_C = -256.0  # what tegrastats prints for a thermal zone that is switched off


def parse_line(line: str) -> dict[str, Any]:
    """One tegrastats line as flat metrics. Keys appear only for what the line reports.

    cpu_load_pct: mean over online cores; cpu_online / cpu_cores; cpu<i>_load_pct, cpu<i>_mhz;
    gpu_load_pct, gpu_mhz; emc_load_pct; ram_used_mb / ram_total_mb; swap_used_mb;
    temp_<zone>_c (lower-case zone); power_<rail>_mw (instantaneous) and power_<rail>_avg_mw.
    """
    out: dict[str, Any] = {}
    if m := _RAM.search(line):
        out["ram_used_mb"], out["ram_total_mb"] = int(m[1]), int(m[2])
    if m := _SWAP.search(line):
        out["swap_used_mb"], out["swap_total_mb"] = int(m[1]), int(m[2])
    if m := _CPU.search(line):
        cores = [c.strip() for c in m[1].split(",")]
        loads = []
        for i, core in enumerate(cores):
            if c := _CORE.fullmatch(core):
                out[f"cpu{i}_load_pct"], out[f"cpu{i}_mhz"] = int(c[1]), int(c[2])
                loads.append(int(c[1]))
        out["cpu_cores"], out["cpu_online"] = len(cores), len(loads)
        if loads:
            out["cpu_load_pct"] = round(sum(loads) / len(loads), 2)
    for m in _LOAD.finditer(line):
        key = "gpu" if m[1] == "GR3D" else "emc"
        out[f"{key}_load_pct"] = int(m[2])
        if m[3]:
            clocks = [int(c) for c in m[3].split(",") if c]
            out[f"{key}_mhz"] = max(clocks)
    for m in _TEMP.finditer(line):
        value = float(m[2])
        if value > _OFF_TEMP_C:
            out[f"temp_{m[1].lower()}_c"] = value
    for m in _RAIL.finditer(line):
        rail = m[1].lower()
        out[f"power_{rail}_mw"], out[f"power_{rail}_avg_mw"] = int(m[2]), int(m[3])
    return out


def available() -> bool:
    return shutil.which("tegrastats") is not None


class TegrastatsReader:
    """Runs `tegrastats --interval MS` in the background and keeps the latest parsed line.

    The loop merges `latest()` into its metrics payload. Where tegrastats is missing (not a Jetson), start()
    does nothing and latest() stays empty, so callers need no special case.
    """

    def __init__(self, interval_ms: int = 1000, command: list[str] | None = None):
        self.command = command or ["tegrastats", "--interval", str(int(interval_ms))]
        self._latest: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.lines = 0

    def start(self) -> "TegrastatsReader":
        if shutil.which(self.command[0]) is None:
            return self
        self._proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self._thread = threading.Thread(target=self._pump, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:  # ends when the process exits or stop() closes it
            reading = parse_line(line)
            if reading:
                with self._lock:
                    self._latest = reading
                    self.lines += 1

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._latest)

    def stop(self, timeout: float = 2.0) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=timeout)
        if self._thread:
            self._thread.join(timeout=timeout)
        self._proc = self._thread = None

    def __enter__(self) -> "TegrastatsReader":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
