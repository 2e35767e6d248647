"""Deploy one bundle to many devices: canary first, then the rest in parallel with a bound.

Each host runs the single-host `Deployer` unchanged (its own ssh connection, its own rollback); this module
only schedules them. By default the first failure stops the fleet: hosts not yet started are `skipped`,
the ones already running finish (a deploy cut off half-way would leave a device between releases). Ctrl-C
does the same, whatever --keep-going says.

A Deployer keeps its state to itself (its own SshTransport and ControlMaster socket dir, its own MQTT status
watcher); nothing chdirs or sets the environment. What the hosts share is prepared once: a .tar bundle is
extracted here before the threads start (two threads extracting it would race), and the checkout's wheel is
built once, by the first host that lacks edge-gmm (SharedWheel).
"""

from __future__ import annotations

import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

from edge_gmm.devices.deploy.deployer import DeployOptions, Deployer
from edge_gmm.devices.deploy.inventory import HostEntry
from edge_gmm.devices.deploy.local import LocalBundle, SharedWheel
from edge_gmm.errors import EXIT_OK, EdgeGmmError


@dataclass
class FleetSettings:
    parallel: int = 4  # deploys at once
    canary: int = 0  # deploy to the first N hosts alone; the rest only when they all succeed
    keep_going: bool = False  # go on after a failure instead of skipping the hosts not started
    wait: bool = True
    timeout: float = 90.0
    dry_run: bool = False
    verbose: bool = False


@dataclass
class HostOutcome:
    host: str
    device_id: str
    result: str  # ok | unchanged | rolled back | failed | skipped
    version: str = ""
    seconds: float = 0.0
    error: str = ""
    exit_code: int = EXIT_OK
    deploy: dict | None = None  # the single-host DeployResult

    @property
    def failed(self) -> bool:
        return self.result in ("failed", "rolled back")

    def to_dict(self) -> dict:
        return asdict(self)


def deploy_options(bundle: str, h: HostEntry, s: FleetSettings) -> DeployOptions:
    """One host's DeployOptions: the inventory's settings, the tool's defaults where it says nothing."""
    run_args = shlex.split(h.run_args or "")
    if h.ha_discovery == "on":
        run_args += ["--ha-discovery", "on"]
    return DeployOptions(
        bundle=bundle, host=h.host, profile=h.profile, mqtt=h.mqtt, sources=h.sources, device_id=h.device_id,
        identity=h.identity, known_hosts=h.known_hosts, accept_new_host_key=bool(h.accept_new_host_key),
        remote_python=h.remote_python or "python3", remote_home=h.remote_home,
        systemd=h.systemd if h.systemd is not None else True, service=h.service or "edge-gmm", pubkey=h.pubkey,
        status_mqtt=h.status_mqtt, wait=s.wait, timeout=s.timeout, run_args=run_args, spool_max_mb=h.spool_max_mb,
        wheel=h.wheel, dry_run=s.dry_run, verbose=s.verbose,
    )  # fmt: skip


class Fleet:
    def __init__(self, bundle: str, hosts: list[HostEntry], settings: FleetSettings, *, log: Callable[[str], None] = print):
        self.bundle, self.hosts, self.s = bundle, hosts, settings
        self._log = log
        self._log_lock = threading.Lock()
        self._failed = threading.Event()
        self._interrupted = threading.Event()
        self._wheel = SharedWheel()

    def run(self) -> list[HostOutcome]:
        LocalBundle.open(self.bundle)  # a .tar is extracted now, once, not by racing threads
        canary, rest = self.hosts[: self.s.canary], self.hosts[self.s.canary :]
        outcomes = self._wave(canary)
        if canary and any(o.failed for o in outcomes):
            self._say(f"canary failed: the other {len(rest)} host(s) are skipped")
            return outcomes + [self._skipped(h) for h in rest]
        if canary and rest:
            self._say(f"canary ok on {len(canary)} host(s); deploying to the other {len(rest)}")
        return outcomes + self._wave(rest)

    def _wave(self, hosts: list[HostEntry]) -> list[HostOutcome]:
        with ThreadPoolExecutor(max_workers=max(1, self.s.parallel), thread_name_prefix="deploy") as pool:
            try:
                return list(pool.map(self._one, hosts))
            except KeyboardInterrupt:  # the queued hosts skip; the running deploys finish (or roll back)
                self._interrupted.set()
                raise

    def _one(self, h: HostEntry) -> HostOutcome:
        if self._interrupted.is_set() or (self._failed.is_set() and not self.s.keep_going):
            return self._skipped(h)
        name = h.device_id or h.host
        t0 = time.monotonic()
        deployer = None
        log = lambda line: self._say(f"[{name}] {line}")  # noqa: E731
        try:
            deployer = Deployer(deploy_options(self.bundle, h, self.s), log=log, wheel=self._wheel)
            result = deployer.run()
        except Exception as e:  # one host's failure, or a bug in its deploy, must not hide the other hosts' results
            self._failed.set()
            for line in f"error: {e}".splitlines():  # with its hint (a rollback's: the loop's last log lines)
                log(line)
            rolled_back = deployer is not None and deployer.result.rolled_back
            return HostOutcome(h.host, h.device_id or "", "rolled back" if rolled_back else "failed",
                               seconds=round(time.monotonic() - t0, 1), error=_one_line(e),
                               exit_code=e.exit_code if isinstance(e, EdgeGmmError) else 1)  # fmt: skip
        return HostOutcome(h.host, result.device_id, "unchanged" if result.noop else "ok",
                           version=str(result.model.get("version", "")), seconds=round(time.monotonic() - t0, 1),
                           deploy=result.to_dict())  # fmt: skip

    def _skipped(self, h: HostEntry) -> HostOutcome:
        return HostOutcome(h.host, h.device_id or "", "skipped", error="not started: an earlier host failed")

    def _say(self, line: str) -> None:
        with self._log_lock:  # parallel deploys: whole lines, never interleaved characters
            self._log(line)


def fleet_exit_code(outcomes: list[HostOutcome]) -> int:
    """0 when every host is ok; else the worst failure's code (1 a bug > 75 restartable > 2 user/device error)."""
    codes = [o.exit_code for o in outcomes if o.failed]
    if not codes:
        return EXIT_OK
    return 1 if 1 in codes else max(codes)


def _one_line(e: Exception) -> str:
    text = str(e).split("\n")[0] if isinstance(e, EdgeGmmError) else f"{type(e).__name__}: {e}"
    return text[:300]
