"""Deploy's service control, one job: the device's `edge-gmm run` service (systemd unit or --no-systemd supervisor).

Install its definition, restart it, watch its retained MQTT status, say why it failed to start, show its log,
stop it. The Deployer (deployer.py) decides when; this class only knows how, over a transport.
"""

from __future__ import annotations

import json

from edge_gmm.devices.deploy.remote import Layout, python_module, q
from edge_gmm.devices.deploy.unit import ServiceSpec

SUPERVISOR = "edge_gmm.devices.deploy.supervisor"
_DEAD = ("failed", "dead", "exited", "stopped", "inactive")


def command_file(layout: Layout, name: str) -> str:
    """HOME/state/NAME.command.json: the supervisor's env file, log and `edge-gmm run` argv (no secrets: ${VARS})."""
    return f"{layout.home}/state/{name}.command.json"


def record_command(layout: Layout, name: str, env_file: str, argv: list) -> str:
    path = command_file(layout, name)
    text = json.dumps({"env_file": env_file, "log": layout.log, "argv": list(argv)})
    return f"mkdir -p {q(layout.home + '/state')} && printf '%s\\n' {q(text)} > {q(path + '.tmp')} && mv -f {q(path + '.tmp')} {q(path)}"


class ServiceControl:
    def __init__(self, transport, layout: Layout, *, systemd: bool, name: str, sudo: str, python: str):
        self.t, self.layout = transport, layout
        self.systemd, self.name, self.sudo, self.python = systemd, name, sudo, python
        self.spec: ServiceSpec | None = None
        self.watcher = None
        self.mark = 0  # the watcher's position at the last restart: statuses before it are the old loop's

    def describe(self) -> str:
        return f"{self.name} ({'systemd' if self.systemd else 'supervisor, pid file in ' + self.layout.run_dir})"

    # ------------------------------------------------------------ definition
    def install(self, spec: ServiceSpec, env_text: str, env_shown: str, unit_text: str) -> None:
        """The env file (0600; it holds the broker URL's secrets) and, with systemd, the unit, enabled."""
        self.spec = spec
        if not self.systemd:
            self.t.put_bytes(env_text.encode(), spec.env_file, mode=0o600, shown=env_shown)
            return
        staged_env = f"{self.layout.config}/{self.name}.env"
        staged_unit = f"{self.layout.config}/{self.name}.service"
        self.t.put_bytes(env_text.encode(), staged_env, mode=0o600, shown=env_shown)
        self.t.put_bytes(unit_text.encode(), staged_unit)
        unit_path = f"/etc/systemd/system/{self.name}.service"
        s = self.sudo
        self.t.run(
            f"{s}mkdir -p /etc/edge-gmm && {s}install -m 0600 -o root -g root {q(staged_env)} {q(spec.env_file)} && "
            f"rm -f {q(staged_env)} && {s}install -m 0644 -o root -g root {q(staged_unit)} {q(unit_path)} && "
            f"{s}systemctl daemon-reload && {s}systemctl enable {q(self.name)}",
            what="install systemd unit",
        )

    # ------------------------------------------------------------ running
    def watch(self, mqtt_url: str, device_id: str) -> None:
        """Subscribe to the device's retained status (once), before the restart, so no status is missed."""
        if self.watcher is None:
            from edge_gmm.devices.deploy.status import StatusWatcher

            self.watcher = StatusWatcher(mqtt_url, device_id).start()

    def restart(self) -> None:
        self.mark = self.watcher.mark() if self.watcher else 0
        if self.systemd:
            s, name = self.sudo, q(self.name)
            # reset-failed: a unit that hit its start limit refuses a plain restart
            self.t.run(f"{s}systemctl reset-failed {name}; {s}systemctl restart {name}", check=False, what="restart service")
            return
        # the supervisor's command, kept on the device so `edge-gmm device start` can start it again after a stop
        self.t.run(record_command(self.layout, self.name, self.spec.env_file, self.spec.run_argv()), check=False,
                   what="record the service command")
        self.t.run(
            python_module(
                self.python, SUPERVISOR, "restart", "--run-dir", self.layout.run_dir, "--name", self.name,
                "--env-file", self.spec.env_file, "--log", self.layout.log, "--", *self.spec.run_argv(),
            ),
            check=False,
            what="restart supervisor",
        )  # fmt: skip

    def wait_online(self, name: str, version: str, timeout: float):
        """(status, why-not) of the loop started by the last restart: online with that model, or why it is not."""
        return self.watcher.wait_for(name, version, timeout=timeout, since=self.mark, abort=self.failure)

    def failure(self) -> str | None:
        """Why the new loop failed to start, or None while it may still come up.

        A loop that exits with an error before its status ever said online has failed to start: restarting it
        (systemd Restart=on-failure, the supervisor) rarely fixes that, so the wait ends at the first crash.
        """
        if self.systemd:
            res = self.t.run(f"systemctl show {q(self.name)} -p ActiveState -p NRestarts -p ExecMainStatus", check=False)
            props = dict(line.split("=", 1) for line in res.out.splitlines() if "=" in line)
            code = props.get("ExecMainStatus", "0")
            if props.get("ActiveState") in ("failed", "inactive") or props.get("NRestarts", "0") not in ("", "0"):
                return f"the loop exited with code {code} before reporting online (service {props.get('ActiveState')})"
            return None
        res = self.t.run(
            python_module(self.python, SUPERVISOR, "status", "--run-dir", self.layout.run_dir, "--name", self.name),
            check=False,
        )
        try:
            state = json.loads(res.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        if state.get("state") in _DEAD or state.get("last_exit") not in (None, 0):
            return f"the loop exited with code {state.get('last_exit')} before reporting online ({state.get('state')})"
        return None

    def log_tail(self, lines: int = 12) -> str:
        if self.systemd:
            cmd = f"{self.sudo}journalctl -u {q(self.name)} -n {lines} --no-pager -o cat"
        else:
            cmd = f"tail -n {lines} {q(self.layout.log)}"
        return self.t.run(cmd, check=False).out.rstrip()

    def stop(self) -> None:
        if self.systemd:
            self.t.run(f"{self.sudo}systemctl stop {q(self.name)}", check=False)
        else:
            self.t.run(
                python_module(self.python, SUPERVISOR, "stop", "--run-dir", self.layout.run_dir, "--name", self.name),
                check=False,
            )

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
