"""`edge-gmm device ...`: operate a deployed device over the same SSH as deploy.

    status     service state (systemd unit or --no-systemd supervisor), the current and previous release
    logs       the loop's log (journalctl or the supervisor's log file), -f to follow
    stop / start / restart
    rollback   current -> the previous release (and previous -> the one that was current), then restart
    releases   the releases on the device, which one is current / previous

One probe (remote.PROBE_SCRIPT, as deploy's step 1) reads the device's facts; the release tree and the service
are deploy's own classes (ReleaseStore, ServiceControl) over deploy's transport (SshTransport).

The supervisor needs the command it runs: deploy records it in HOME/state/NAME.command.json (service.py). For a
service deployed before that file existed, the command is read from the running supervisor's /proc cmdline and
recorded then (a stop records it first).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from edge_gmm.devices.deploy import remote
from edge_gmm.devices.deploy.releases import ReleaseStore
from edge_gmm.devices.deploy.remote import Layout, q
from edge_gmm.devices.deploy.service import ServiceControl, command_file, record_command
from edge_gmm.devices.deploy.target import SshTarget
from edge_gmm.errors import DeviceError, RuntimeFailure

_RUNNING = ("active", "running")
_COMING = ("activating", "starting", "restarting", "reloading")


@dataclass
class DeviceOptions:
    host: str
    identity: Optional[str] = None
    known_hosts: Optional[str] = None
    accept_new_host_key: bool = False
    remote_python: str = "python3"
    remote_home: Optional[str] = None
    systemd: bool = True
    service: str = "edge-gmm"
    timeout: float = 30.0  # seconds start/restart/rollback wait for the service to be running


class _Recorded:
    """What ServiceControl.restart needs of a ServiceSpec (`env_file`, `run_argv()`), from the recorded command."""

    def __init__(self, env_file: str, argv: List[str]):
        self.env_file, self._argv = env_file, list(argv)

    def run_argv(self) -> List[str]:
        return list(self._argv)


class DeviceOps:
    def __init__(self, opts: DeviceOptions, *, log: Callable[[str], None] = print, transport=None):
        self.o = opts
        self.log = log
        self.target = SshTarget.parse(opts.host)
        self.t = transport or self._transport()
        self.facts: dict = {}
        self.layout: Optional[Layout] = None
        self.svc: Optional[ServiceControl] = None
        self.store: Optional[ReleaseStore] = None

    def _transport(self):
        from edge_gmm.devices.deploy.ssh import SshTransport

        return SshTransport(self.target, identity=self.o.identity, known_hosts=self.o.known_hosts,
                            accept_new_host_key=self.o.accept_new_host_key, log=self.log)  # fmt: skip

    def close(self) -> None:
        self.t.close()

    def __enter__(self) -> "DeviceOps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ facts
    def _mode(self) -> str:
        return "systemd" if self.o.systemd else "supervisor"

    def probe(self) -> dict:
        """The device's facts (deploy's probe), the layout, the service and the release tree."""
        self.t.connect()
        res = self.t.run(
            f"{q(self.o.remote_python)} - {q(self.o.remote_home or '')} {q(self.o.service)} {self._mode()}",
            input=remote.PROBE_SCRIPT.encode(), check=False, what="device probe",
        )  # fmt: skip
        if res.rc == 127:
            raise DeviceError(f"{self.target}: {self.o.remote_python} not found on the device", hint="pass --remote-python PATH")
        try:
            f = json.loads(res.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeviceError(f"{self.target}: the device probe failed: {(res.err or res.out).strip()[-300:]}") from None
        self.facts = f
        self.layout = Layout(f["home"], self.o.service)
        if self.o.systemd and not f.get("systemd"):
            raise DeviceError(f"{self.target}: no systemd on the device", hint="pass --no-systemd (the supervisor deploy --no-systemd used)")
        sudo = "" if f.get("root") else "sudo -n "
        self.svc = ServiceControl(self.t, self.layout, systemd=self.o.systemd, name=self.o.service, sudo=sudo,
                                  python=f["executable"])  # fmt: skip
        self.store = ReleaseStore(self.t, self.layout, f)
        return f

    def _require_deployment(self) -> None:
        if not self.facts:
            self.probe()
        if not self.facts.get("current") and not self.facts.get("releases"):
            raise DeviceError(
                f"{self.target}: nothing deployed under {self.facts['home']} (no current release)",
                hint="deploy first (`edge-gmm deploy BUNDLE --host ...`), or pass the --remote-home deploy used",
            )

    # ------------------------------------------------------------ service state
    def service_state(self) -> dict:
        """{"state": ..., "running": bool, ...details} of the systemd unit or the supervisor."""
        if self.o.systemd:
            res = self.t.run(
                f"systemctl show {q(self.o.service)} -p ActiveState -p SubState -p MainPID -p NRestarts "
                f"-p ExecMainStatus -p ActiveEnterTimestamp", check=False,
            )  # fmt: skip
            props = dict(line.split("=", 1) for line in res.out.splitlines() if "=" in line)
            state = props.get("ActiveState") or "unknown"
            return {"state": state, "running": state == "active", "sub_state": props.get("SubState"),
                    "pid": int(props.get("MainPID") or 0) or None, "restarts": _int(props.get("NRestarts")),
                    "last_exit": _int(props.get("ExecMainStatus")), "since": props.get("ActiveEnterTimestamp") or None}
        res = self.t.run(
            remote.python_module(self.svc.python, "edge_gmm.devices.deploy.supervisor", "status",
                                 "--run-dir", self.layout.run_dir, "--name", self.o.service), check=False,
        )  # fmt: skip
        try:
            st = json.loads(res.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeviceError(f"{self.target}: the supervisor's status failed: {(res.err or res.out).strip()[-300:]}") from None
        state = st.get("state", "inactive")
        return {"state": state, "running": state == "running" and bool(st.get("supervisor_pid")),
                "pid": st.get("child_pid"), "supervisor_pid": st.get("supervisor_pid"),
                "restarts": st.get("restarts"), "last_exit": st.get("last_exit"), "updated": st.get("updated")}

    def status(self) -> dict:
        self._require_deployment()
        f = self.facts
        deployed = f.get("deployed") or {}
        return {
            "host": str(self.target),
            "home": f["home"],
            "service": self.o.service,
            "mode": self._mode(),
            **self.service_state(),
            "current": _name(f.get("current")),
            "previous": _name(f.get("previous")),
            "model": {"name": deployed.get("name"), "version": deployed.get("version")} if deployed else None,
            "deployed_at": deployed.get("deployed_at"),
            "edge_gmm": f.get("edge_gmm"),
        }

    def releases(self) -> List[dict]:
        self._require_deployment()
        cur, prev = _name(self.facts.get("current")), _name(self.facts.get("previous"))
        return [{"release": r, "current": r == cur, "previous": r == prev} for r in self.facts.get("releases", [])]

    # ------------------------------------------------------------ logs
    def log_command(self, lines: int, follow: bool) -> str:
        if self.o.systemd:
            return f"{self.svc.sudo}journalctl -u {q(self.o.service)} -n {int(lines)} --no-pager -o cat" + (" -f" if follow else "")
        return f"tail -n {int(lines)}{' -F' if follow else ''} {q(self.layout.log)}"

    def logs(self, lines: int = 50) -> List[str]:
        self._require_deployment()
        res = self.t.run(self.log_command(lines, False), check=False, what="read the log")
        if res.rc != 0 and not res.out:
            raise DeviceError(f"{self.target}: cannot read the loop's log: {(res.err or '').strip()[-300:]}")
        return res.out.splitlines()

    def follow(self, lines: int = 50) -> int:
        """Stream the log to this terminal until interrupted (ssh's output is ours, nothing buffered)."""
        self._require_deployment()
        cmd = [*self.t.base, "-t", "-t", self.t.target.destination, self.log_command(lines, True)] if _tty() else \
              [*self.t.base, self.t.target.destination, self.log_command(lines, True)]  # fmt: skip
        try:
            return subprocess.call(cmd)
        except KeyboardInterrupt:
            return 0

    # ------------------------------------------------------------ stop, start, restart
    def _recorded_command(self) -> Optional[_Recorded]:
        """The supervisor's command: the file deploy wrote, else the running supervisor's cmdline (then recorded)."""
        path = command_file(self.layout, self.o.service)
        res = self.t.run(f"cat {q(path)}", check=False)
        if res.rc == 0:
            try:
                d = json.loads(res.out)
                return _Recorded(d["env_file"], d["argv"])
            except (ValueError, KeyError):
                pass
        st = self.service_state()
        pid = st.get("supervisor_pid")
        if not pid:
            return None
        res = self.t.run(f"cat /proc/{int(pid)}/cmdline", check=False)
        parts = res.out.split("\0")
        if res.rc != 0 or "--" not in parts:
            return None
        sup, argv = parts[: parts.index("--")], [a for a in parts[parts.index("--") + 1 :] if a != ""]
        env_file = sup[sup.index("--env-file") + 1] if "--env-file" in sup else f"{self.layout.config}/{self.o.service}.env"
        self.t.run(record_command(self.layout, self.o.service, env_file, argv), check=False)
        return _Recorded(env_file, argv)

    def stop(self) -> dict:
        self._require_deployment()
        if not self.o.systemd:
            self._recorded_command()  # so that `start` can bring it back
        self.svc.stop()
        st = self.service_state()
        if st["running"]:
            raise RuntimeFailure(f"{self.target}: {self.svc.describe()} is still {st['state']} after stop")
        return st

    def start(self, *, restart: bool = False) -> dict:
        self._require_deployment()
        if not self.facts.get("current"):
            raise DeviceError(f"{self.target}: no current release to run", hint="deploy one, or `edge-gmm device rollback`")
        before = self.service_state()
        if before["running"] and not restart:
            return {**before, "changed": False}
        if self.o.systemd:
            s, name = self.svc.sudo, q(self.o.service)
            verb = "restart" if restart else "start"
            self.t.run(f"{s}systemctl reset-failed {name}; {s}systemctl {verb} {name}", check=False, what=f"{verb} service")
        else:
            rec = self._recorded_command()
            if rec is None:
                raise DeviceError(
                    f"{self.target}: the supervisor's command is not recorded on the device ({command_file(self.layout, self.o.service)})",
                    hint="deploy again (`edge-gmm deploy ... --no-systemd`): it records the command",
                )
            self.svc.spec = rec
            self.svc.restart()  # the supervisor's restart: a stop (nothing when stopped), then a start
        return {**self._wait_running(), "changed": True}

    def _wait_running(self) -> dict:
        """The service state once it runs (and stays up a moment), or RuntimeFailure with the log's last lines."""
        deadline = time.monotonic() + self.o.timeout
        steady = None
        while True:
            st = self.service_state()
            if st["running"]:
                steady = steady or time.monotonic()
                if time.monotonic() - steady >= 1.0:  # still up a second later: not a start that crashes at once
                    return st
            elif st["state"] not in _COMING:
                steady = None
                if st["state"] not in _RUNNING:
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        tail = self.svc.log_tail()
        raise RuntimeFailure(
            f"{self.target}: {self.svc.describe()} did not come up (state {st['state']}, last exit {st.get('last_exit')})",
            hint="last lines of the loop's log:\n" + ("\n".join("    " + line for line in tail.splitlines()) or "    (empty)"),
        )

    # ------------------------------------------------------------ rollback
    def rollback(self) -> dict:
        self._require_deployment()
        cur, prev = self.facts.get("current"), self.facts.get("previous")
        if not prev:
            raise DeviceError(f"{self.target}: no previous release to roll back to (current {_name(cur)})",
                              hint="`edge-gmm device releases` lists what is there; deploy the one you want")
        target = _name(prev)
        if target not in self.facts.get("releases", []):
            raise DeviceError(f"{self.target}: previous points to {prev}, which is not on the device any more")
        self.store.switch(target)  # current -> previous, previous -> the release that was current
        self.facts["current"], self.facts["previous"] = prev, cur
        manifest = self.t.run(f"cat {q(self.layout.release(target) + '/manifest.json')}", check=False)
        try:
            model = json.loads(manifest.out).get("model") or {}
        except ValueError:
            model = {}
        # deploy's state follows the switch; no fingerprint, so the next deploy of any release does its full run
        state = {"release": target, "name": model.get("name"), "version": model.get("version"),
                 "rolled_back_from": _name(cur), "deployed_at": time.time()}  # fmt: skip
        self.t.put_bytes(json.dumps(state).encode(), self.layout.deployed_state)
        self.facts["deployed"] = state
        st = self.start(restart=True)
        return {**st, "current": target, "previous": _name(cur), "rolled_back_from": _name(cur),
                "model": {"name": model.get("name"), "version": model.get("version")}}


def _name(link: Optional[str]) -> Optional[str]:
    """"releases/R" -> "R"."""
    return link.split("/", 1)[1] if link and "/" in link else link


def _int(v) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _tty() -> bool:
    import sys

    return sys.stdout.isatty()
