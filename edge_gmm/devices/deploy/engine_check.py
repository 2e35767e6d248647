"""Deploy step 6: `edge-gmm doctor` on the device, before `current` is switched.

The engine the service will run (same runner and precision flags) must reproduce the bundle's golden windows
(runtime/doctor.py). The doctor's JSON report comes back over ssh; a failed check is a DeviceError carrying the
report as text, so deploy refuses the switch and the old release keeps running.
"""

from __future__ import annotations

import json

from edge_gmm.devices.deploy.remote import edge_gmm_cli
from edge_gmm.errors import DeviceError

RUN_FLAGS = ("--runner", "--precision", "--threads")  # the `run` options that decide which engine the doctor opens
# the doctor report's `result` (cli/doctor.py) -> what deploy says; a report that never came back goes by exit code
RESULTS = {"mismatch": "this engine is not the model you validated", "runtime-failure": "the engine could not run on the device",
           "refused": "the device's doctor refused the bundle"}
EXIT_RESULT = {2: "refused", 75: "runtime-failure"}


def run_flags(args: list[str], names=RUN_FLAGS) -> list[str]:
    """The `--name value` / `--name=value` pairs of `names` in `args` (the service's `edge-gmm run` arguments)."""
    out = []
    for i, a in enumerate(args):
        name = a.split("=", 1)[0]
        if name in names:
            out += [a] if "=" in a else args[i:i + 2]
    return out


def summary(report: dict) -> str:
    """One line for a passed check."""
    run, lat, g = report.get("runner") or {}, report.get("latency") or {}, report.get("golden")
    engine = f"{run.get('runner')} {run.get('precision')}"
    timing = f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms"
    if g is None:
        return f"{engine}: no golden windows in this bundle (exported before them): the engine ran, its numbers are not checked; {timing}"
    agree = ", ".join(f"{t} {100 * a:.1f}%" for t, a in g["agreement"].items())
    err = max(g["max_error"].values()) if g["max_error"] else 0.0
    return f"{engine}: {g['windows']} golden windows agree with fp32 ({agree or 'no classification head'}; max error {err:.2g}); {timing}"


class EngineCheck:
    """Runs the doctor for one release over a transport; `run()` returns the passed report or raises DeviceError."""

    def __init__(self, transport, cli: str, log):
        self.t, self.cli, self.log = transport, cli, log

    def command(self, release_dir: str, service_args: list[str], pubkey_remote: str | None) -> str:
        args = ["doctor", "--bundle", release_dir, "--json", *run_flags(service_args)]
        args += ["--pubkey", pubkey_remote] if pubkey_remote else []
        return edge_gmm_cli(self.cli, *args)

    def run(self, release_dir: str, service_args: list[str], pubkey_remote: str | None) -> dict:
        cmd = self.command(release_dir, service_args, pubkey_remote)
        res = self.t.run(cmd, check=False, timeout=3600, what="engine check")  # a first TensorRT build takes minutes
        report = _json_document(res.out)
        if res.rc == 0:
            return report or {}
        from edge_gmm.runtime.doctor import render_report

        text = render_report(report) if report else ((res.err or res.out).strip()[-1500:] or f"exit {res.rc}")
        for line in text.splitlines():
            self.log(f"    | {line}")
        result = (report or {}).get("result") or EXIT_RESULT.get(res.rc)
        why = RESULTS.get(result, f"the doctor exited with code {res.rc}")
        detail = "; ".join((report or {}).get("golden", {}).get("failures", [])) if report and report.get("golden") else ""
        detail = detail or (report or {}).get("error") or _last_error(res.err)
        raise DeviceError(f"{why}: {detail}" if detail else why, hint=f"run it there to see everything: {cmd}")


def _json_document(out: str) -> dict | None:
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _last_error(err: str) -> str:
    lines = [line for line in (err or "").strip().splitlines() if "error:" in line]
    return lines[-1].split("error:", 1)[-1].strip() if lines else ""
