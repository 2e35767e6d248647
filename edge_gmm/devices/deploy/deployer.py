"""`edge-gmm deploy`: the steps, each printed and each safe to repeat, and the rollback when the new loop fails.

    0 verify here      `bundle verify` of the local copy (with --pubkey): refused -> exit 2, nothing remote touched
    1 check device     arch, Python, disk, L4T/JetPack/TensorRT, edge-gmm, current release, service state,
                       the modules the sources need (devices/sources/needs.py)
    2 device package   install/upgrade edge-gmm[device] from a wheel built here, when missing or older
    3 upload           bundle -> staging/<release> (skipped when releases/<release> exists)
    4 verify           `edge-gmm bundle verify` ON the device; refused -> staging removed, nothing switched
    5 engine           `edge-gmm engine build` on the device when the profile has TensorRT
    6 check engine     `edge-gmm doctor` on the device: golden windows through the engine the service will run;
                       disagreement or failure -> the report is printed, the release removed, nothing switched
    7 switch           --pubkey installed as HOME/trust/bundle.pub; previous -> old current, current -> releases/<release>
    8 service          env file (0600) + systemd unit or supervisor; restart
    9 wait             the retained status shows the new model online; else roll back (and the trusted key) and say why

Redeploying the same bundle with the same settings to a running service changes nothing, but is still verified
on the device. A release that `current` or `previous` points to is never deleted.

The Deployer decides the order and prints the steps; the release tree (releases.py: ReleaseStore), the service
(service.py: ServiceControl) and the engine check (engine_check.py) each do one job over the transport.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edge_gmm import __version__
from edge_gmm.devices.deploy import remote
from edge_gmm.devices.deploy.local import LocalBundle, build_wheel, version_tuple, wheel_command
from edge_gmm.devices.deploy.releases import ReleaseStore
from edge_gmm.devices.deploy.remote import Layout, edge_gmm_cli, q
from edge_gmm.devices.deploy.service import ServiceControl
from edge_gmm.devices.deploy.target import SshTarget
from edge_gmm.devices.deploy.unit import ServiceSpec, fingerprint, render_env, render_unit
from edge_gmm.errors import BundleError, ConfigError, DeviceError

STEPS = ("check device", "device package", "upload", "verify on device", "engine", "check engine", "switch", "service",
         "wait for status")
_ARCH = {"arm64": "aarch64", "amd64": "x86_64"}
_RUNNING = ("active", "running")


@dataclass
class DeployOptions:
    bundle: str
    host: str
    profile: str
    mqtt: str
    sources: str
    device_id: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    remote_python: str = "python3"
    remote_home: str | None = None
    systemd: bool = True
    service: str = "edge-gmm"
    pubkey: str | None = None
    status_mqtt: str | None = None
    wait: bool = True
    timeout: float = 90.0
    run_args: list[str] = field(default_factory=list)
    spool_max_mb: float | None = None  # passed to `edge-gmm run --spool-max-mb` when given
    wheel: str | None = None
    dry_run: bool = False
    verbose: bool = False


@dataclass
class DeployResult:
    host: str
    device_id: str
    release: str
    model: dict
    previous: str | None = None
    noop: bool = False
    rolled_back: bool = False
    steps: list[dict] = field(default_factory=list)
    status: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Deployer:
    def __init__(self, opts: DeployOptions, *, log: Callable[[str], None] = print, transport=None,
                 wheel: Callable[[str | None], Path] = build_wheel):
        """`wheel(opts.wheel)` gives the wheel step 2 installs; a fleet passes one SharedWheel to all its Deployers."""
        from edge_gmm.devices.profiles import load_profile, profile_file

        self.o = opts
        self.log = log
        self._wheel = wheel
        self.target = SshTarget.parse(opts.host)
        self.profile = load_profile(opts.profile)
        self.profile_path = profile_file(opts.profile)
        self.bundle = LocalBundle.open(opts.bundle)
        self._pubkey = Path(opts.pubkey).read_bytes() if opts.pubkey and Path(opts.pubkey).is_file() else None
        if opts.spool_max_mb is not None and not opts.spool_max_mb > 0:
            raise ConfigError(f"--spool-max-mb {opts.spool_max_mb:g}: must be a positive number of MB")
        self.t = transport or self._transport()
        self.facts: dict = {}
        self.result = DeployResult(str(self.target), opts.device_id or "", self.bundle.release,
                                   {"name": self.bundle.name, "version": self.bundle.version})  # fmt: skip
        self._step_no = 0
        self.store: ReleaseStore | None = None  # the release tree, once the device's facts are known
        self.svc: ServiceControl | None = None  # the service, from step 8 on

    def _transport(self):
        from edge_gmm.devices.deploy.ssh import DryRunTransport, SshTransport

        if self.o.dry_run:
            return DryRunTransport(self.target, log=self.log)
        return SshTransport(
            self.target,
            identity=self.o.identity,
            known_hosts=self.o.known_hosts,
            accept_new_host_key=self.o.accept_new_host_key,
            log=self.log,
            verbose=self.o.verbose,
        )

    # ------------------------------------------------------------ printing
    def step(self, title: str, detail: str = "") -> None:
        self._step_no += 1
        self._current = {"step": title, "detail": detail, "t0": time.monotonic()}
        self.log(f"[{self._step_no}/{len(STEPS)}] {title}" + (f": {detail}" if detail else ""))

    def done(self, outcome: str, detail: str = "") -> None:
        cur = self._current
        self.result.steps.append(
            {"step": cur["step"], "outcome": outcome, "detail": detail, "seconds": round(time.monotonic() - cur["t0"], 3)}
        )
        if detail:
            self.log(f"      {outcome}: {detail}")

    # ------------------------------------------------------------ the run
    def run(self) -> DeployResult:
        dry = " (dry run: nothing is executed)" if self.o.dry_run else ""
        self.log(f"deploy {self.bundle.name} {self.bundle.version} -> {self.target} as {self.bundle.release}{dry}")
        if self.o.dry_run:
            self.log(f"  every remote command runs as: {self.t.describe()} '<command>'")
        try:
            self._verify_here()
            self._check()
            self._package()
            self.store = ReleaseStore(self.t, self.layout, self.facts)
            spec, env_text, env_shown, unit_text, fp = self._service_definition()
            if self._is_noop(fp):
                self._noop()
                return self.result
            new_in_staging = self._upload()
            self._verify(new_in_staging)
            self._engine()
            self._check_engine(spec)
            self._switch()
            try:
                self._service(spec, env_text, env_shown, unit_text)
                self._wait(fp)
            except DeviceError as e:
                if self.o.dry_run:
                    raise
                self._rollback(str(e).split("\n  hint:")[0])
            return self.result
        finally:
            if self.svc is not None:
                self.svc.close()
            self.t.close()

    # ------------------------------------------------------------ 0 verify here, before anything remote
    def _verify_here(self) -> None:
        try:
            checked = self.bundle.verify(self.o.pubkey)
        except BundleError as e:
            raise BundleError(f"the bundle fails verification here, so nothing was sent to {self.target}: {e.args[0]}",
                              hint=e.hint or "export it again (or check --pubkey) and redeploy") from None
        sig = f"signature ok with {self.o.pubkey}" if self.o.pubkey else ("signed, no --pubkey" if self.bundle.signed else "unsigned")
        self.log(f"  verified here: {len(checked)} files ({sig})")

    def _noop(self) -> None:
        """Same release, settings and key, service running: nothing changes, but the device copy is still verified."""
        for title in STEPS[2:]:
            if title == STEPS[3]:
                self._verify(False)
                continue
            self.step(title)
            self.done("unchanged", "already done")
        self.log(f"{self.bundle.release} is already deployed and running on {self.target}: nothing to do")
        self.result.noop = True

    # ------------------------------------------------------------ 1 check
    def _check(self) -> None:
        self.step(STEPS[0], f"{self.target} with profile {self.profile.name}")
        self.t.connect()
        if self.o.dry_run:
            self.t.run(f"{q(self.o.remote_python)} - {q(self.o.remote_home or '')} {q(self.o.service)} {self._mode()}")
            self.log("    |   (the device probe script is piped on stdin; a fresh device is assumed below)")
            if self.o.verbose:
                for line in remote.PROBE_SCRIPT.strip().splitlines():
                    self.log(f"    |   {line}")
            home = self.o.remote_home or ("/root" if self.target.user == "root" else f"/home/{self.target.user}") + "/edge-gmm"
            self.facts = {"arch": self.profile.arch, "executable": self.o.remote_python, "home": home, "edge_gmm": None,
                          "edge_gmm_cli": None, "current": None, "previous": None, "releases": [], "deployed": None,
                          "root": self.target.user == "root", "systemd": self.o.systemd, "hostname": self.target.host,
                          "user": self.target.user, "service_state": "inactive", "trust_key": None}  # fmt: skip
            self._finish_facts()
            self.done("assumed", f"home {home}")
            return
        self.needs = self._source_needs()
        self.facts = self._probe()
        f = self.facts
        arch = _ARCH.get(f["arch"], f["arch"])
        if arch != self.profile.arch:
            raise DeviceError(
                f"{self.target} is {arch} but profile {self.profile.name} is for {self.profile.arch}",
                hint="pick the profile of this device (`edge-gmm devices list`)",
            )
        from edge_gmm.devices.profiles import MIN_PYTHON  # the device side's floor: 3.8, JetPack 5's Python

        if version_tuple(f["python"]) < MIN_PYTHON:
            raise DeviceError(
                f"{self.target}: {f['executable']} is Python {f['python']}; the edge-gmm device side needs "
                f"{'.'.join(map(str, MIN_PYTHON))} or newer",
                hint="install a newer Python on the device (e.g. a conda/venv) and pass --remote-python PATH",
            )
        need_mb = int(self.bundle.size_mb() * 2) + 100
        if f["disk_free_mb"] < need_mb:
            raise DeviceError(f"{self.target}: {f['disk_free_mb']} MB free under {f['home']}, deploy needs {need_mb} MB")
        from edge_gmm.devices.profiles import has_tensorrt

        if has_tensorrt(self.profile) and not f["tensorrt"]:
            raise DeviceError(
                f"{self.target}: profile {self.profile.name} builds a TensorRT engine, but `import tensorrt` fails in {f['executable']}",
                hint="on a Jetson make the venv with --system-site-packages so JetPack's TensorRT is visible, or pick a CPU profile",
            )
        if self.o.systemd and not f["systemd"]:
            raise DeviceError(f"{self.target}: no systemd on the device", hint="rerun with --no-systemd to use the supervisor")
        if self.o.systemd and not f["root"] and not f["sudo"]:
            raise DeviceError(f"{self.target}: installing a systemd unit needs root or sudo", hint="or use --no-systemd")
        self._check_needs(self.needs)
        self._finish_facts()
        bits = [arch, f"Python {f['python']}", f"{f['disk_free_mb'] / 1024:.1f} GB free"]
        bits += [f"L4T {f['l4t']}"] if f["l4t"] else []
        bits += [f"TensorRT {f['tensorrt']}"] if f["tensorrt"] else []
        bits += [f"edge-gmm {f['edge_gmm']}" if f["edge_gmm"] else "edge-gmm not installed"]
        bits += [f"current {f['current']}" if f["current"] else "no release yet", f"service {f['service_state']}"]
        self.done("ok", ", ".join(bits))

    def _source_needs(self) -> list:
        """What the sources file needs on the device (modules, device nodes), from a local file or a URI."""
        from edge_gmm.devices.sources.needs import source_needs
        from edge_gmm.devices.sources_file import looks_like_file
        from edge_gmm.runtime.bundle import Bundle

        if looks_like_file(self.o.sources) and not Path(self.o.sources).is_file():
            return []  # a sources file that lives on the device: it is read there, at the loop's start
        return source_needs(self.o.sources, Bundle.open(self.bundle.root).sensors)

    def _check_needs(self, needs: list) -> None:
        """A source whose engine is missing fails here, before any upload (it would fail on the device's first start)."""
        imports, paths = self.facts.get("imports") or {}, self.facts.get("paths") or {}
        for n in needs:
            if n.module and imports.get(n.module):
                raise DeviceError(
                    f"{self.target}: source {n.uri} needs {n.module}, which does not import in {self.facts['executable']} "
                    f"({imports[n.module]})", hint=f"on the device: {n.install}")
        for n in needs:
            if n.path and not paths.get(n.path):  # an unplugged board is not an error: the loop waits for it
                self.log(f"      note: {n.path} (for {n.uri}) is not on the device now; the loop retries until it appears")

    def _probe(self) -> dict:
        needs = {"modules": sorted({n.module for n in self.needs if n.module}),
                 "paths": sorted({n.path for n in self.needs if n.path})}
        res = self.t.run(
            f"{q(self.o.remote_python)} - {q(self.o.remote_home or '')} {q(self.o.service)} {self._mode()} {q(json.dumps(needs))}",
            input=remote.PROBE_SCRIPT.encode(),
            check=False,
            what="device probe",
        )
        if res.rc == 127:
            raise DeviceError(f"{self.target}: {self.o.remote_python} not found on the device", hint="pass --remote-python PATH")
        try:
            return json.loads(res.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeviceError(f"{self.target}: the device probe failed: {(res.err or res.out).strip()[-300:]}") from None

    def _finish_facts(self) -> None:
        f = self.facts
        self.layout = Layout(f["home"], self.o.service)
        self.python = f["executable"]
        # the device's `edge-gmm` command (what the unit's ExecStart runs); a dry run shows it unresolved
        self.cli = f.get("edge_gmm_cli") or "edge-gmm"
        if f.get("edge_gmm") and not f.get("edge_gmm_cli") and not self.o.dry_run:
            raise DeviceError(
                f"{self.target}: edge_gmm is importable by {self.python} but its `edge-gmm` command was not found",
                hint=f"reinstall it there: {self.python} -m pip install --force-reinstall 'edge-gmm[device]'",
            )
        self.sudo = "" if f["root"] else "sudo -n "
        if not self.result.device_id:
            from edge_gmm.mqtt.topics import check_device_id

            host = f["hostname"] or self.target.host
            is_address = ":" in host or host.replace(".", "").isdigit()
            self.result.device_id = check_device_id(host.replace(".", "-").replace(":", "-") if is_address else host.split(".")[0])

    def _mode(self) -> str:
        return "systemd" if self.o.systemd else "supervisor"

    # ------------------------------------------------------------ 2 package
    def _package(self) -> None:
        have = self.facts.get("edge_gmm")
        self.step(STEPS[1])
        if have and version_tuple(have) >= version_tuple(__version__):
            self.done("ok", f"edge-gmm {have} already installed ({self.python})")
            return
        why = f"upgrading {have} -> {__version__}" if have else f"installing edge-gmm {__version__}[device]"
        self.log(f"      {why}")
        if self.o.dry_run:
            wheel_name = Path(self.o.wheel).name if self.o.wheel else f"edge_gmm-{__version__}-py3-none-any.whl"
            self.log(f"    (local) $ {' '.join(wheel_command('WHEEL_DIR'))}")
            wheel_remote = f"{self.layout.wheels}/{wheel_name}"
            self.log(f"    > upload {wheel_name} -> {wheel_remote}")
        else:
            wheel = self._wheel(self.o.wheel)
            wheel_remote = f"{self.layout.wheels}/{wheel.name}"
            self.t.put_bytes(wheel.read_bytes(), wheel_remote)
        self.t.run(
            f"{q(self.python)} -m pip install --upgrade {q(wheel_remote + '[device]')}", timeout=1800, what="pip install"
        )
        if not self.o.dry_run:
            self.facts = self._probe()
            self._finish_facts()
            if not self.facts["edge_gmm"]:
                raise DeviceError(f"{self.target}: edge-gmm still not importable by {self.python} after pip install")
        self.done("installed", why)

    # ------------------------------------------------------------ service definition and no-op test
    def _service_definition(self):
        f = self.facts
        launcher = [self.cli]
        sources = self.o.sources
        if not (Path(sources).is_file() or "://" in sources or sources.startswith(("/", "pty:"))):
            raise ConfigError(
                f"--sources {sources}: no such file here, and not a source URI",
                hint="give a local sources file (it is uploaded), a URI such as synth://machine-health, or an absolute path on the device",
            )
        if Path(sources).is_file():
            sources = f"{self.layout.config}/sources{Path(sources).suffix or '.yaml'}"
        extra = list(self.o.run_args)
        from edge_gmm.devices.profiles import pick_precision

        precision, warning = pick_precision(self.profile, self.bundle.precision)
        self._precision = precision
        if warning:
            self.log(f"warning: {warning}")
            if precision in self.bundle.precisions and "--precision" not in extra:
                extra += ["--precision", precision]
        env_file = f"/etc/edge-gmm/{self.o.service}.env" if self.o.systemd else f"{self.layout.config}/{self.o.service}.env"
        spec = ServiceSpec(
            device_id=self.result.device_id,
            home=self.layout.home,
            launcher=launcher,
            sources=sources,
            user=f["user"],
            model=f"{self.bundle.name} {self.bundle.version}",
            service=self.o.service,
            env_file=env_file,
            extra_args=extra,
            spool_max_mb=self.o.spool_max_mb,
        )
        env_text, env_shown = render_env(spec, self.o.mqtt)
        unit_text = render_unit(spec) if self.o.systemd else ""
        sources_bytes = Path(self.o.sources).read_bytes() if Path(self.o.sources).is_file() else b""
        key_sha = hashlib.sha256(self._pubkey).hexdigest() if self._pubkey else ""
        fp = fingerprint(self.bundle.release, spec.run_argv(), env_text, unit_text, self._mode(), sources_bytes.hex(), key_sha)
        return spec, env_text, env_shown, unit_text, fp

    def _is_noop(self, fp: str) -> bool:
        f = self.facts
        deployed = f.get("deployed") or {}
        return (
            f.get("current") == f"releases/{self.bundle.release}"
            and deployed.get("fingerprint") == fp
            and f.get("service_state") in _RUNNING
            and not self._key_changes()
        )

    def _key_changes(self) -> bool:
        """Whether --pubkey differs from the device's installed trusted key (deploy never removes one)."""
        return self._pubkey is not None and (self.facts.get("trust_key") or "").encode() != self._pubkey

    # ------------------------------------------------------------ 3 upload, 4 verify, 5 engine
    def _upload(self) -> bool:
        rel = self.bundle.release
        self.step(STEPS[2], f"{self.bundle.path} ({self.bundle.size_mb():.1f} MB)")
        if not self.store.upload(self.bundle.root, rel, self.bundle.files()):
            self.done("skipped", f"already on the device: {self.layout.release(rel)}")
            return False
        self.done("uploaded", f"{len(self.bundle.files())} files -> {self.layout.staging(rel)}")
        return True

    def _verify(self, in_staging: bool) -> None:
        rel = self.bundle.release
        where = self.layout.staging(rel) if in_staging else self.layout.release(rel)
        self.step(STEPS[3], f"sha256{' and signature' if self.o.pubkey else ''} with the device's `edge-gmm bundle verify`")
        args = ["bundle", "verify", where]
        if self.o.pubkey:
            key_remote = f"{self.layout.config}/bundle.pub"
            self.t.put_bytes(self._pubkey or Path(self.o.pubkey).read_bytes(), key_remote)
            args += ["--pubkey", key_remote]
        res = self.t.run(edge_gmm_cli(self.cli, *args), check=False, what="bundle verify")
        if res.rc != 0:
            self._refused(res, where, in_staging)
        if in_staging:
            self.store.promote(rel)
        self.done("ok", f"verified on the device: {self.layout.release(rel)}")

    def _refused(self, res, where: str, in_staging: bool) -> None:
        """The device refused the bundle: remove what this deploy uploaded, or a stale copy nothing runs; never the
        release `current` or `previous` points to."""
        msg = (res.err or res.out).strip().splitlines()
        reason = next((m for m in msg if "error:" in m), msg[-1] if msg else f"exit {res.rc}")
        reason = reason.split("error:", 1)[-1].strip()
        running = self.store.current or "no release"
        if self.store.in_use(self.bundle.release):
            kept = f"{where} is in use and was left as it is"
            hint = ("the copy on the device no longer matches (changed there?); with a trusted key installed the loop "
                    "refuses it at its next start: deploy a new version, or check --pubkey")
        else:
            self.store.discard(where, "remove refused copy")
            kept = f"{'the upload' if in_staging else 'the stale copy ' + where} was removed"
            hint = "export the bundle again (or check --pubkey) and redeploy"
        raise DeviceError(
            f"the device refused the bundle: {reason}; nothing was switched ({running} keeps running; {kept})", hint=hint
        )

    def _engine(self) -> None:
        from edge_gmm.devices.profiles import has_tensorrt

        self.step(STEPS[4])
        profile_remote = f"{self.layout.config}/device-profile.toml"
        self.t.put_bytes(self.profile_path.read_bytes(), profile_remote)
        if not has_tensorrt(self.profile):
            self.done("skipped", f"profile {self.profile.name} runs ONNX Runtime (no TensorRT)")
            return
        cmd = edge_gmm_cli(self.cli, "engine", "build", self.layout.release(self.bundle.release), "--profile", profile_remote)
        res = self.t.run(cmd, check=False, timeout=3600, what="engine build")
        if res.rc != 0:
            msg = (res.err or res.out).strip().splitlines()
            raise DeviceError(
                f"TensorRT engine build failed on the device: {msg[-1] if msg else f'exit {res.rc}'}; nothing was switched",
                hint=f"run it there to see everything: {cmd}",
            )
        self.done("built", (res.out.strip().splitlines() or [""])[-1])

    def _check_engine(self, spec: ServiceSpec) -> None:
        """The device's engine must reproduce the bundle's golden windows before anything is switched."""
        from edge_gmm.devices.deploy.engine_check import EngineCheck, summary

        rel = self.bundle.release
        self.step(STEPS[5], "golden windows through the device's engine (`edge-gmm doctor`)")
        key_remote = f"{self.layout.config}/bundle.pub" if self.o.pubkey else None
        try:
            report = EngineCheck(self.t, self.cli, self.log).run(self.layout.release(rel), spec.extra_args, key_remote)
        except DeviceError as e:
            if not self.store.in_use(rel):  # a release that failed its check is never run: it goes, with its engine
                self.store.discard(self.layout.release(rel), "remove the refused release")
            running = self.store.current or "no release"
            raise DeviceError(f"the engine check failed on the device: {e.args[0]}; nothing was switched "
                              f"({running} keeps running)", hint=e.hint) from None
        self.done("planned" if self.o.dry_run else "ok", "" if self.o.dry_run else summary(report))

    # ------------------------------------------------------------ 7 switch
    def _switch(self) -> None:
        rel = f"releases/{self.bundle.release}"
        self.step(STEPS[6])
        old = self.result.previous = self.store.current
        if self.store.install_key(self._pubkey):
            self.log(f"      trusted key installed: {self.layout.trusted_key} (unsigned or other-signed bundles are refused there)")
        if not self.store.switch(self.bundle.release):
            self.done("unchanged", f"current -> {rel}")
            return
        self.done("switched", f"current -> {rel}" + (f", previous -> {old}" if old else ""))

    # ------------------------------------------------------------ 8 service, 9 wait
    def _service(self, spec: ServiceSpec, env_text: str, env_shown: str, unit_text: str) -> None:
        self.step(STEPS[7], "systemd unit" if self.o.systemd else "supervisor (--no-systemd)")
        self.svc = ServiceControl(self.t, self.layout, systemd=self.o.systemd, name=self.o.service, sudo=self.sudo,
                                  python=self.python)
        if Path(self.o.sources).is_file():
            self.t.put_bytes(Path(self.o.sources).read_bytes(), spec.sources)
        self.svc.install(spec, env_text, env_shown, unit_text)
        if self.o.wait and not self.o.dry_run:
            self.svc.watch(self.o.status_mqtt or self.o.mqtt, self.result.device_id)
        self.svc.restart()
        self.done("restarted", self.svc.describe())

    def _wait(self, fp: str) -> None:
        self.step(STEPS[8], f"edge-gmm/v1/{self.result.device_id}/status online with {self.bundle.name} {self.bundle.version}")
        if self.o.wait and not self.o.dry_run:
            status, why = self.svc.wait_online(self.bundle.name, self.bundle.version, timeout=self.o.timeout)
            if why:
                raise DeviceError(why)
            self.result.status = status
        state = {"release": self.bundle.release, "name": self.bundle.name, "version": self.bundle.version,
                 "fingerprint": fp, "mode": self._mode(), "deployed_at": time.time()}  # fmt: skip
        self.t.put_bytes(json.dumps(state).encode(), self.layout.deployed_state)
        self.done("online" if self.result.status else "started", f"{self.bundle.release} runs on {self.target}")

    # ------------------------------------------------------------ rollback
    def _rollback(self, reason: str) -> None:
        tail = self.svc.log_tail()
        old = self.store.current
        self.log(f"rollback: {reason}")
        came_back = ""
        self.store.restore_key()
        if old and old != f"releases/{self.bundle.release}":
            self.store.switch_back()
            self.svc.restart()
            back = (self.facts.get("deployed") or {})
            if self.svc.watcher and back.get("name"):
                _, why = self.svc.wait_online(back["name"], str(back.get("version")), timeout=min(self.o.timeout, 60))
                came_back = "; it is online again" if not why else f"; but it did not come back either: {why}"
                if not why:
                    self.t.put_bytes(json.dumps(back).encode(), self.layout.deployed_state)
            where = f"rolled back to {old}{came_back}"
        else:
            self.svc.stop()
            self.store.remove_current()
            where = "no previous release to roll back to: the service is stopped"
        self.result.rolled_back = True
        raise DeviceError(
            f"deploy of {self.bundle.release} failed: {reason}; {where}",
            hint="last lines of the loop's log:\n" + ("\n".join("    " + l for l in tail.splitlines()) or "    (empty)"),
        )


def deploy(opts: DeployOptions, *, log: Callable[[str], None] = print) -> DeployResult:
    return Deployer(opts, log=log).run()
