"""`edge-gmm deploy BUNDLE --host user@host[:port] --profile P --sources S --mqtt URL`: ship, verify, run, roll back.

With `--inventory fleet.toml` instead of --host: every host the file lists (docs/operating.md, "A fleet"),
canary first with --canary N, --parallel at once; the command-line options fill what the file leaves unset.

examples:
  edge-gmm deploy bundle/ --host nvidia@jetson.local --profile jetson-orin-nano --sources sources.yaml --mqtt mqtt://broker.lan
  edge-gmm deploy bundle/ --inventory devices/examples/fleet.toml --canary 1 --parallel 4
"""

from __future__ import annotations

from edge_gmm.cli.common import add_json, add_ssh_args, emit


def configure(p) -> None:
    p.add_argument("bundle", help="bundle directory or .tar (what `edge-gmm export --out` wrote)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="user@host or user@host:port of the device")
    where.add_argument("--inventory", metavar="FILE", help="a fleet file (TOML/YAML/JSON) listing hosts: deploy to all of them")
    p.add_argument("--profile", help="device profile name or .toml path (`edge-gmm devices list`); required with --host")
    p.add_argument("--sources", help="sources file (uploaded) or a source URI, as `edge-gmm run --sources` takes; required with --host")
    p.add_argument("--mqtt", help="broker URL the device publishes to (kept in a 0600 env file on the device); required with --host")
    p.add_argument("--device-id", help="device id in the MQTT topics (default: the device's hostname)")
    g = add_ssh_args(p)
    g.add_argument("--no-systemd", action="store_true", help="run the loop under edge-gmm's supervisor (pid file) instead of a systemd unit")
    g.add_argument("--service", default="edge-gmm", help="systemd unit / supervisor name (default: edge-gmm)")
    g.add_argument("--pubkey", metavar="KEY", help="ed25519 public key: the bundle is verified with it here and on the device, "
                   "and it is installed there as the trusted key (HOME/trust/bundle.pub): from then on the device runs signed bundles only")
    g.add_argument("--spool-max-mb", type=float, metavar="MB", help="passed to `edge-gmm run --spool-max-mb` (default: run's own)")
    g.add_argument("--run-args", default="", metavar="ARGS", help="extra arguments for `edge-gmm run`, e.g. \"--speed 1\"")
    g.add_argument("--ha-discovery", choices=["off", "on"], default="off",
                   help="the device announces its sensors to Home Assistant (`run --ha-discovery on`; docs/home-assistant.md)")
    g.add_argument("--wheel", metavar="WHL", help="edge-gmm wheel to install when the device lacks it (default: built from this checkout)")
    g = p.add_argument_group("status")
    g.add_argument("--status-mqtt", metavar="URL", help="broker URL as this machine reaches it (default: --mqtt)")
    g.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the device's status to show the new model (default 90)")
    g.add_argument("--no-wait", action="store_true", help="do not wait for the status (and so never roll back)")
    g = p.add_argument_group("fleet (with --inventory)")
    g.add_argument("--parallel", type=int, default=4, metavar="N", help="deploys at once (default 4)")
    g.add_argument("--canary", type=int, default=0, metavar="N", help="deploy to the first N hosts alone; the rest only when they all succeed")
    g.add_argument("--keep-going", action="store_true", help="after a failure go on with the other hosts (default: skip those not started)")
    p.add_argument("--dry-run", action="store_true", help="print every remote command and file; connect to nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="print every remote command as it runs")
    add_json(p)


def run(args) -> int:
    import sys

    # with --json the step lines go to stderr so stdout stays one JSON document
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.inventory:
        return _run_fleet(args, log)
    from edge_gmm.devices.deploy.deployer import Deployer

    missing = [f"--{k}" for k in ("profile", "sources", "mqtt") if not getattr(args, k)]
    if missing:
        from edge_gmm.errors import ConfigError

        raise ConfigError(f"deploy --host needs {', '.join(missing)}", hint="or list hosts and their settings in an --inventory file")
    from edge_gmm.devices.deploy.fleet import FleetSettings, deploy_options

    result = Deployer(deploy_options(args.bundle, _cli_entry(args), _settings(args, FleetSettings)), log=log).run()
    if args.json:
        emit(args, result.to_dict())
    return 0


def _cli_entry(args):
    """The command line as one host's settings (for --inventory: what the file leaves unset)."""
    from edge_gmm.devices.deploy.inventory import HostEntry

    return HostEntry(
        host=args.host, device_id=args.device_id, profile=args.profile, sources=args.sources, mqtt=args.mqtt,
        status_mqtt=args.status_mqtt, identity=args.identity, known_hosts=args.known_hosts,
        accept_new_host_key=args.accept_new_host_key or None, remote_python=args.remote_python,
        remote_home=args.remote_home, systemd=False if args.no_systemd else None, service=args.service,
        pubkey=args.pubkey, spool_max_mb=args.spool_max_mb, run_args=args.run_args or None,
        ha_discovery=args.ha_discovery if args.ha_discovery != "off" else None, wheel=args.wheel,
    )  # fmt: skip


def _settings(args, cls):
    return cls(parallel=args.parallel, canary=args.canary, keep_going=args.keep_going, wait=not args.no_wait,
               timeout=args.timeout, dry_run=args.dry_run, verbose=args.verbose)


def _run_fleet(args, log) -> int:
    from edge_gmm.cli.common import table
    from edge_gmm.devices.deploy.fleet import Fleet, FleetSettings, fleet_exit_code
    from edge_gmm.devices.deploy.inventory import read_inventory
    from edge_gmm.errors import ConfigError

    if args.parallel < 1 or args.canary < 0:
        raise ConfigError("--parallel must be >= 1 and --canary >= 0")
    cli = _cli_entry(args)
    cli.device_id = None  # one id for every host would collide; the file names them (default: each hostname)
    hosts = read_inventory(args.inventory, cli)
    outcomes = Fleet(args.bundle, hosts, _settings(args, FleetSettings), log=log).run()
    rows = [{"host": o.host, "device": o.device_id, "result": o.result, "version": o.version,
             "s": o.seconds, "error": o.error} for o in outcomes]  # fmt: skip
    ok = sum(not o.failed and o.result != "skipped" for o in outcomes)
    emit(args, {"inventory": args.inventory, "hosts": [o.to_dict() for o in outcomes], "ok": ok, "total": len(outcomes)},
         table(rows) + f"\n{ok}/{len(outcomes)} hosts ok")
    return fleet_exit_code(outcomes) or (0 if ok == len(outcomes) else 2)
