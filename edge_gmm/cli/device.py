"""`edge-gmm device ACTION --host user@host[:port]`: operate a device `edge-gmm deploy` set up, over the same SSH.

Actions: status, logs [-f] [--lines N], stop, start, restart, rollback (current -> previous release, restarted),
releases. The ssh and device options are deploy's (--identity, --known-hosts, --accept-new-host-key,
--remote-home, --remote-python, --service, --no-systemd); pass the ones deploy was given. --json for each.
Exit 2: a user error (nothing deployed there, no previous release, unknown host key); 75: the service did not
come up (a restart may cure it).

examples:
  edge-gmm device status --host nvidia@jetson.local
  edge-gmm device logs -f --host nvidia@jetson.local
  edge-gmm device rollback --host nvidia@jetson.local --no-systemd --json
  edge-gmm device status --inventory devices/examples/fleet.toml
"""

from __future__ import annotations

import argparse
import datetime
import sys

from edge_gmm.cli.common import add_json, add_ssh_args, emit, table

ACTIONS = {
    "status": "service state and the release it runs",
    "logs": "the loop's log (journalctl or the supervisor's log file)",
    "stop": "stop the service",
    "start": "start the service (nothing when it runs)",
    "restart": "restart the service",
    "rollback": "switch current back to the previous release and restart",
    "releases": "the releases on the device; which is current and previous",
}


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="user@host or user@host:port of the device")
    where.add_argument("--inventory", metavar="FILE", help="the fleet file deploy --inventory used: act on every host in it, one table")
    g = add_ssh_args(p)
    g.add_argument("--no-systemd", action="store_true", help="the service runs under edge-gmm's supervisor (deploy --no-systemd)")
    g.add_argument("--service", default="edge-gmm", help="systemd unit / supervisor name (default: edge-gmm)")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds start/restart/rollback wait for the service to run (default 30)")
    add_json(p)
    return p


def configure(p) -> None:
    common = _common()
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    for name, helptext in ACTIONS.items():
        sp = sub.add_parser(name, parents=[common], help=helptext, description=helptext)
        sp.add_argument("--debug", action="store_true", help="show tracebacks")
        if name == "logs":
            sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
            sp.add_argument("-n", "--lines", type=int, default=50, help="how many of the last lines (default 50)")


def run(args) -> int:
    from edge_gmm.errors import ConfigError

    if getattr(args, "lines", 1) < 0:
        raise ConfigError(f"--lines {args.lines}: must be 0 or more")
    if args.inventory:
        return _run_fleet(args)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    data, text = _act(_options(args, args.host), args, log)
    if text is not None:
        emit(args, data, text)
    return 0 if text is not None else data


def _options(args, host: str, entry=None):
    """DeviceOptions for `host`: an inventory entry's settings first, then the command line's."""
    from edge_gmm.devices.deploy.ops import DeviceOptions

    pick = lambda key, cli: getattr(entry, key, None) if getattr(entry, key, None) is not None else cli  # noqa: E731
    return DeviceOptions(host=host, identity=pick("identity", args.identity), known_hosts=pick("known_hosts", args.known_hosts),
                         accept_new_host_key=bool(pick("accept_new_host_key", args.accept_new_host_key)),
                         remote_python=pick("remote_python", args.remote_python), remote_home=pick("remote_home", args.remote_home),
                         systemd=pick("systemd", not args.no_systemd), service=pick("service", args.service),
                         timeout=args.timeout)  # fmt: skip


def _act(opts, args, log):
    """Run the action on one device: (JSON data, text), or (exit code, None) after `logs -f`."""
    from edge_gmm.devices.deploy.ops import DeviceOps
    from edge_gmm.errors import ConfigError

    with DeviceOps(opts, log=log) as ops:
        a = args.action
        if a == "status":
            st = ops.status()
            return st, _status_text(st)
        if a == "releases":
            rows = ops.releases()
            text = table([{"release": r["release"], "": "current" if r["current"] else ("previous" if r["previous"] else "")}
                          for r in rows], ["release", ""])  # fmt: skip
            return {"host": str(ops.target), "releases": rows}, text
        if a == "logs":
            if args.follow:
                if args.json:
                    raise ConfigError("logs --follow streams text; it does not take --json")
                return ops.follow(args.lines), None
            lines = ops.logs(args.lines)
            return {"host": str(ops.target), "log": ops.log_command(args.lines, False), "lines": lines}, "\n".join(lines)
        if a == "stop":
            st = ops.stop()
            return {"host": str(ops.target), "action": "stop", **st}, f"{ops.target}: {ops.svc.describe()} {st['state']}"
        if a in ("start", "restart"):
            st = ops.start(restart=a == "restart")
            verb = "restarted" if a == "restart" else ("started" if st["changed"] else "already running")
            return ({"host": str(ops.target), "action": a, **st},
                    f"{ops.target}: {ops.svc.describe()} {verb}: {st['state']}{_pid(st)}")  # fmt: skip
        st = ops.rollback()
        m = st.get("model") or {}
        return ({"host": str(ops.target), "action": "rollback", **st},
                f"{ops.target}: rolled back from {st['rolled_back_from']} to {st['current']} "
                f"({m.get('name')} {m.get('version')}): {st['state']}{_pid(st)}")  # fmt: skip


def _run_fleet(args) -> int:
    """The action on every host of the inventory, one after the other; one table (or one JSON list)."""
    from edge_gmm.devices.deploy.inventory import read_inventory
    from edge_gmm.errors import ConfigError, EdgeGmmError

    if args.action == "logs" and args.follow:
        raise ConfigError("logs --follow reads one device", hint="use --host")
    quiet = lambda line: None  # noqa: E731  (per-host step lines would bury the table)
    results, rows, worst = [], [], 0
    for h in read_inventory(args.inventory, _device_defaults()):
        try:
            data, _ = _act(_options(args, h.host, h), args, quiet)
            results.append({"device_id": h.device_id, **data, "ok": True})
            rows.append(_fleet_row(h, data))
        except EdgeGmmError as e:
            worst = max(worst, e.exit_code)
            results.append({"host": h.host, "device_id": h.device_id, "ok": False, "error": str(e).split("\n")[0]})
            rows.append({"host": h.host, "device": h.device_id or "", "state": "error", "error": str(e).split("\n")[0][:120]})
    emit(args, {"inventory": args.inventory, "action": args.action, "hosts": results}, table(rows))
    return worst


def _device_defaults():
    """An inventory read for `device` needs no profile, sources or mqtt: placeholders keep its checks quiet."""
    from edge_gmm.devices.deploy.inventory import HostEntry

    return HostEntry(profile="-", sources="-", mqtt="-")


def _fleet_row(h, data: dict) -> dict:
    model = data.get("model") or {}
    return {"host": h.host, "device": h.device_id or "", "state": data.get("state", data.get("action", "")),
            "release": data.get("current", ""), "version": model.get("version", ""), "error": ""}


def _pid(st: dict) -> str:
    return f" (pid {st['pid']})" if st.get("pid") else ""


def _status_text(st: dict) -> str:
    model = st.get("model") or {}
    when = ""
    if st.get("deployed_at"):
        when = ", deployed " + datetime.datetime.fromtimestamp(st["deployed_at"]).strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        ("host", st["host"]),
        ("service", f"{st['service']} ({st['mode']})"),
        ("state", st["state"] + _pid(st) + (f", restarts {st['restarts']}" if st.get("restarts") else "")
         + (f", last exit {st['last_exit']}" if st.get("last_exit") not in (None, 0) else "")),
        ("release", (st.get("current") or "(none)") + (f" ({model.get('name')} {model.get('version')}{when})" if model else "")),
        ("previous", st.get("previous") or "(none)"),
        ("home", st["home"]),
    ]
    return "\n".join(f"{k + ':':<10}{v}" for k, v in rows)
