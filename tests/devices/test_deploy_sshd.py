"""`edge-gmm deploy` end to end against a REAL OpenSSH server on loopback and a real mosquitto.

The "device" is this machine reached over ssh: sshd with a throwaway host key and user key, the remote Python
is this .venv (edge-gmm already installed there: the "already installed" path), the loop runs under the
--no-systemd supervisor and publishes its status to mosquitto. No systemd here: the unit file is checked as
a file in test_deploy_units.py.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Mosquitto, free_port, wait_port
from edge_gmm.devices.deploy.ssh import SshTransport
from edge_gmm.devices.deploy.supervisor import Paths, read_state
from edge_gmm.devices.deploy.target import SshTarget
from edge_gmm.errors import DeviceError
from test_loop_kit import make_bundle

SSHD = "/usr/sbin/sshd"


class Sshd:
    """sshd -D on a free loopback port; host key, user key and authorized_keys in a temp dir; stopped by PID."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.user_key = workdir / "user_key"
        self.known_hosts = workdir / "known_hosts"  # starts empty: tests accept the key explicitly
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        d = self.dir
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
        shutil.copy(d / "user_key.pub", d / "authorized_keys")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\n"
        )
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "wb"))
        wait_port(self.port)
        return self

    @property
    def host(self) -> str:
        return f"{getpass.getuser()}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.fail("these tests need OpenSSH's sshd and root (to log in as the current user): see scripts/setup.sh")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Mosquitto(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


def _variant(base: Path, out: Path, version: str, model_bytes: bytes | None = None, sign_key: Path | None = None) -> Path:
    """The same bundle as `base` under another version (and optionally other model bytes), written properly."""
    from edge_gmm.runtime.bundle import write_bundle

    m = json.loads((base / "manifest.json").read_text())
    for k in ("artifacts", "format", "format_version"):
        m.pop(k)
    m["model"]["version"] = version
    onnx = out.parent / f"{out.name}.onnx"
    onnx.write_bytes(model_bytes if model_bytes is not None else (base / "model.fp32.onnx").read_bytes())
    return write_bundle(out, m, {"fp32": onnx}, sign_key=sign_key)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    v1 = make_bundle(d / "v1")
    return {
        "v1": v1,
        "v2": _variant(v1, d / "v2", "0.0.2"),
        "broken": _variant(v1, d / "broken", "0.0.9", model_bytes=b"this is not an ONNX model"),
    }


class Device:
    """One deploy target: a fresh remote home and device id on the shared sshd + broker."""

    def __init__(self, sshd: Sshd, broker: Mosquitto, home: Path, device_id: str):
        self.sshd, self.broker, self.home, self.device_id = sshd, broker, home, device_id

    def args(self, bundle: Path, *extra: str) -> list[str]:
        return [
            "deploy", str(bundle), "--host", self.sshd.host, "--profile", "cpu-x86_64",
            "--sources", "synth://machine-health", "--mqtt", self.broker.url, "--device-id", self.device_id,
            "--identity", str(self.sshd.user_key), "--known-hosts", str(self.sshd.known_hosts),
            "--accept-new-host-key", "--remote-python", sys.executable, "--remote-home", str(self.home),
            "--no-systemd", "--timeout", "30", *extra,
        ]  # fmt: skip

    def current(self) -> str:
        return os.readlink(self.home / "current")

    def state(self) -> dict:
        return read_state(Paths(str(self.home / "run"), "edge-gmm"))

    def status(self) -> dict:
        """The retained status, read with mosquitto_sub (a third-party client)."""
        out = subprocess.run(
            ["mosquitto_sub", "-p", str(self.broker.port), "-t", f"edge-gmm/v1/{self.device_id}/status", "-C", "1", "-W", "5"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return json.loads(out.stdout)

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "edge_gmm.devices.deploy.supervisor", "stop", "--run-dir", str(self.home / "run")],
            capture_output=True, timeout=30,
        )  # fmt: skip


@pytest.fixture
def device(sshd, broker, tmp_path, request):
    dev = Device(sshd, broker, tmp_path / "device-home", f"dev-{request.node.name[-24:].replace('_', '-')}")
    yield dev
    dev.stop()


def _alive(pid: int | None) -> bool:
    return bool(pid) and Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="module")
def running(sshd, broker, bundles, tmp_path_factory):
    """A device with release v1 deployed and running, shared by the tests that must leave it so."""
    from edge_gmm.cli.main import main

    dev = Device(sshd, broker, tmp_path_factory.mktemp("running") / "home", "dev-running")
    assert main(dev.args(bundles["v1"])) == 0
    yield dev
    dev.stop()


def test_clean_deploy_brings_the_loop_up_redeploy_is_a_noop_and_a_new_version_replaces_it(device, bundles, cli):
    code, out, err = cli(*device.args(bundles["v1"]))
    assert code == 0, err
    assert "[8/8] wait for status" in out and "online" in out
    assert device.current().startswith("releases/fingerprint-0.0.1-")
    status = device.status()
    assert status["state"] == "online" and status["model"]["version"] == "0.0.1"
    state = device.state()
    assert state["state"] == "running" and _alive(state["child_pid"])
    assert (device.home / "run" / "edge-gmm.pid").read_text().strip() == str(state["supervisor_pid"])
    env = device.home / "config" / "edge-gmm.env"
    assert env.stat().st_mode & 0o777 == 0o600 and device.broker.url in env.read_text()

    code, out, err = cli(*device.args(bundles["v1"], "--json"))
    assert code == 0, err
    assert json.loads(out)["noop"] is True and "nothing to do" in err
    assert device.state()["child_pid"] == state["child_pid"]  # the loop was not restarted

    code, out, err = cli(*device.args(bundles["v2"]))
    assert code == 0, err
    assert device.current().startswith("releases/fingerprint-0.0.2-")
    assert os.readlink(device.home / "previous").startswith("releases/fingerprint-0.0.1-")
    assert device.status()["model"]["version"] == "0.0.2"


def test_tampered_bundle_is_refused_on_the_device_and_the_old_release_keeps_running(running, bundles, cli, tmp_path):
    before = running.state()["child_pid"]
    tampered = _variant(bundles["v1"], tmp_path / "tampered", "0.0.3")
    onnx = tampered / "model.fp32.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + bytes([onnx.read_bytes()[-1] ^ 1]))  # one bit, after export

    code, out, err = cli(*running.args(tampered))
    assert code == 2
    assert "refused the bundle" in err and "model.fp32.onnx" in err and "sha256" in err
    assert "Traceback" not in err
    assert running.current().startswith("releases/fingerprint-0.0.1-")
    assert not any((running.home / "staging").iterdir())  # the refused upload is removed
    assert running.state()["child_pid"] == before and _alive(before)
    assert running.status()["model"]["version"] == "0.0.1"


def test_a_new_release_whose_loop_fails_to_start_is_rolled_back(running, bundles, cli):
    code, out, err = cli(*running.args(bundles["broken"], "--timeout", "60"))
    assert code == 2
    assert "rolled back to releases/fingerprint-0.0.1-" in err and "online again" in err
    # why: the loop's first crash ended the wait (not the 60 s timeout), with the loop's own last log lines
    assert "exited with code 2 before reporting online" in err and "cannot load this model" in err
    assert running.current().startswith("releases/fingerprint-0.0.1-")
    assert not (running.home / "previous").exists()  # restored as it was: v1 had no predecessor
    assert running.status()["model"]["version"] == "0.0.1"
    assert _alive(running.state()["child_pid"])


def test_signature_is_checked_on_the_device_and_the_profile_must_fit(device, bundles, cli, tmp_path):
    from edge_gmm.runtime.bundle import generate_keypair

    signer, _ = generate_keypair(tmp_path / "ours")
    _, stranger = generate_keypair(tmp_path / "theirs")
    signed = _variant(bundles["v1"], tmp_path / "signed", "0.0.5", sign_key=signer)
    code, out, err = cli(*device.args(signed, "--pubkey", str(stranger)))
    assert code == 2 and "refused the bundle" in err and "manifest.json.sig" in err and "signature" in err
    assert not (device.home / "current").exists()  # nothing was switched

    args = device.args(signed)
    args[args.index("cpu-x86_64")] = "jetson-orin-nano"
    code, out, err = cli(*args)
    assert code == 2 and "x86_64 but profile jetson-orin-nano is for aarch64" in err
    assert "[2/8]" not in out  # stopped at the check, before touching anything


def test_unknown_host_key_is_refused_unless_accepted(sshd, tmp_path):
    target = SshTarget.parse(sshd.host)
    fresh = tmp_path / "known_hosts"
    strict = SshTransport(target, identity=str(sshd.user_key), known_hosts=str(fresh))
    with pytest.raises(DeviceError, match="unknown host key") as e:
        strict.run("true")
    assert "--accept-new-host-key" in str(e.value)
    strict.close()
    accepting = SshTransport(target, identity=str(sshd.user_key), known_hosts=str(fresh), accept_new_host_key=True)
    assert accepting.run("echo hello").out.strip() == "hello"
    accepting.close()
    assert fresh.read_text().strip()  # recorded: the next strict connection trusts it
    again = SshTransport(target, identity=str(sshd.user_key), known_hosts=str(fresh))
    assert again.run("echo again").out.strip() == "again"
    again.close()
    # a different key for the same host is refused loudly even with --accept-new-host-key
    fresh.write_text(fresh.read_text().replace(fresh.read_text().split()[-1], _other_key(tmp_path)))
    changed = SshTransport(target, identity=str(sshd.user_key), known_hosts=str(fresh), accept_new_host_key=True)
    with pytest.raises(DeviceError, match="CHANGED"):
        changed.run("true")
    changed.close()


def _other_key(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    return (tmp_path / "other.pub").read_text().split()[1]


def test_transport_uploads_files_atomically_with_their_mode(sshd, tmp_path):
    t = SshTransport(SshTarget.parse(sshd.host), identity=str(sshd.user_key), known_hosts=str(sshd.known_hosts),
                     accept_new_host_key=True)  # fmt: skip
    try:
        secret = tmp_path / "remote" / "config" / "secret.env"
        t.put_bytes(b"EDGE_GMM_MQTT=mqtt://u:p@h\n", str(secret), mode=0o600)
        assert secret.read_bytes() == b"EDGE_GMM_MQTT=mqtt://u:p@h\n" and secret.stat().st_mode & 0o777 == 0o600
        src = tmp_path / "tree"
        (src / "sub").mkdir(parents=True)
        (src / "a.bin").write_bytes(os.urandom(300_000))
        (src / "sub" / "b.txt").write_text("b")
        t.put_tree(src, str(tmp_path / "remote" / "tree"))
        assert (tmp_path / "remote" / "tree" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
        assert (tmp_path / "remote" / "tree" / "sub" / "b.txt").read_text() == "b"
        with pytest.raises(DeviceError, match="exit 3"):
            t.run("exit 3", what="a failing command")
    finally:
        t.close()
