"""`edge-gmm deploy BUNDLE --host user@host[:port] --profile P --sources S --mqtt URL`: ship, verify, run, roll back."""

from __future__ import annotations

import shlex

from edge_gmm.cli.common import add_json, add_ssh_args, emit


def configure(p) -> None:
    p.add_argument("bundle", help="bundle directory or .tar (what `edge-gmm export --out` wrote)")
    p.add_argument("--host", required=True, help="user@host or user@host:port of the device")
    p.add_argument("--profile", required=True, help="device profile name or .toml path (`edge-gmm devices list`)")
    p.add_argument("--sources", required=True, help="sources file (uploaded) or a source URI, as `edge-gmm run --sources` takes")
    p.add_argument("--mqtt", required=True, help="broker URL the device publishes to (kept in a 0600 env file on the device)")
    p.add_argument("--device-id", help="device id in the MQTT topics (default: the device's hostname)")
    g = add_ssh_args(p)
    g.add_argument("--no-systemd", action="store_true", help="run the loop under edge-gmm's supervisor (pid file) instead of a systemd unit")
    g.add_argument("--service", default="edge-gmm", help="systemd unit / supervisor name (default: edge-gmm)")
    g.add_argument("--pubkey", metavar="KEY", help="ed25519 public key: the bundle is verified with it here and on the device, "
                   "and it is installed there as the trusted key (HOME/trust/bundle.pub): from then on the device runs signed bundles only")
    g.add_argument("--spool-max-mb", type=float, metavar="MB", help="passed to `edge-gmm run --spool-max-mb` (default: run's own)")
    g.add_argument("--run-args", default="", metavar="ARGS", help="extra arguments for `edge-gmm run`, e.g. \"--speed 1\"")
    g.add_argument("--wheel", metavar="WHL", help="edge-gmm wheel to install when the device lacks it (default: built from this checkout)")
    g = p.add_argument_group("status")
    g.add_argument("--status-mqtt", metavar="URL", help="broker URL as this machine reaches it (default: --mqtt)")
    g.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the device's status to show the new model (default 90)")
    g.add_argument("--no-wait", action="store_true", help="do not wait for the status (and so never roll back)")
    p.add_argument("--dry-run", action="store_true", help="print every remote command and file; connect to nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="print every remote command as it runs")
    add_json(p)


def run(args) -> int:
    from edge_gmm.devices.deploy.deployer import DeployOptions, Deployer

    opts = DeployOptions(
        bundle=args.bundle,
        host=args.host,
        profile=args.profile,
        mqtt=args.mqtt,
        sources=args.sources,
        device_id=args.device_id,
        identity=args.identity,
        known_hosts=args.known_hosts,
        accept_new_host_key=args.accept_new_host_key,
        remote_python=args.remote_python,
        remote_home=args.remote_home,
        systemd=not args.no_systemd,
        service=args.service,
        pubkey=args.pubkey,
        status_mqtt=args.status_mqtt,
        wait=not args.no_wait,
        timeout=args.timeout,
        run_args=shlex.split(args.run_args),
        spool_max_mb=args.spool_max_mb,
        wheel=args.wheel,
        dry_run=args.dry_run,
        verbose=args.verbose,
    )
    import sys

    # with --json the step lines go to stderr so stdout stays one JSON document
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    result = Deployer(opts, log=log).run()
    if args.json:
        emit(args, result.to_dict())
    return 0
