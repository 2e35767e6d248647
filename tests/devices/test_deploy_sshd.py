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
import time
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


def _variant(base: Path, out: Path, version: str, model_bytes: bytes | None = None, sign_key: Path | None = None,
             extra: dict | None = None) -> Path:
    """The same bundle as `base` under another version (optionally other model bytes, `extra` manifest keys), written properly."""
    from edge_gmm.runtime.bundle import write_bundle

    m = json.loads((base / "manifest.json").read_text())
    for k in ("artifacts", "format", "format_version"):
        m.pop(k)
    m["model"]["version"] = version
    m.update(extra or {})
    onnx = out.parent / f"{out.name}.onnx"
    onnx.write_bytes(model_bytes if model_bytes is not None else (base / "model.fp32.onnx").read_bytes())
    stream = {g: {p: base / art["file"] for p, art in spec["artifacts"].items()}  # the streaming split, as it was
              for g, spec in m.get("stream", {}).get("graphs", {}).items()}
    return write_bundle(out, m, {"fp32": onnx}, sign_key=sign_key, stream_artifacts=stream or None)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    v1 = make_bundle(d / "v1")
    return {
        "v1": v1,
        "v2": _variant(v1, d / "v2", "0.0.2"),
        "broken": _variant(v1, d / "broken", "0.0.9", model_bytes=b"this is not an ONNX model"),
        # the engine is fine (the check passes), but `run` refuses the manifest's postprocess: the loop fails to start
        "bad_post": _variant(v1, d / "bad-post", "0.0.8", extra=BAD_POSTPROCESS),
    }


BAD_POSTPROCESS = {"postprocess": {"tasks": {"state": {"bogus": 1}}}}


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
    assert "[9/9] wait for status" in out and "online" in out
    assert "[6/9] check engine" in out and "no golden windows in this bundle" in out  # an older bundle still deploys
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


def test_a_bundle_that_fails_verification_here_is_refused_before_the_device_is_touched(running, bundles, cli, tmp_path):
    from edge_gmm.runtime.bundle import generate_keypair

    before = running.state()["child_pid"]
    tampered = _variant(bundles["v1"], tmp_path / "tampered", "0.0.3")
    _flip_last_bit(tampered / "model.fp32.onnx")  # one bit, after export
    damaged_v1 = tmp_path / "v1-copy"  # the running release's manifest, so the same release name
    shutil.copytree(bundles["v1"], damaged_v1)
    _flip_last_bit(damaged_v1 / "model.fp32.onnx")
    _, stranger = generate_keypair(tmp_path / "theirs")
    cases = [((tampered,), "sha256"), ((damaged_v1,), "sha256"), ((bundles["v1"], "--pubkey", str(stranger)), "not signed")]
    for args, why in cases:  # the last two were "already deployed and running: nothing to do", exit 0
        code, out, err = cli(*running.args(*args))
        assert code == 2, (args, out)
        assert "fails verification here, so nothing was sent" in err and why in err and "Traceback" not in err
        assert "[1/9]" not in out  # nothing remote was touched
    assert not (running.home / "staging").exists() or not any((running.home / "staging").iterdir())
    assert running.current().startswith("releases/fingerprint-0.0.1-")
    assert running.state()["child_pid"] == before and _alive(before)
    assert running.status()["model"]["version"] == "0.0.1"


def _flip_last_bit(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def test_a_release_on_the_device_that_no_longer_verifies_is_never_deleted(device, bundles, cli):
    assert cli(*device.args(bundles["v1"]))[0] == 0
    rel = device.current()
    before = device.state()["child_pid"]
    _flip_last_bit(device.home / rel / "model.fp32.onnx")  # changed on the device, under the running loop
    # new settings (upload skipped: the release is there), then the same settings (a no-op, still verified)
    for extra in (("--run-args", "--metrics-every 5"), ()):
        code, out, err = cli(*device.args(bundles["v1"], *extra))
        assert code == 2, out
        assert (device.home / rel / "manifest.json").is_file() and device.current() == rel  # was rm -rf'ed
        assert "the device refused the bundle" in err and "sha256" in err and "left as it is" in err
    assert device.state()["child_pid"] == before and _alive(before)


def _strip_signature_and_swap_model(release: Path) -> None:
    """What someone who can write under releases/ does: other model bytes, hashes recomputed, signature removed."""
    import hashlib

    (release / "model.fp32.onnx").write_bytes(b"someone else's model")
    m = json.loads((release / "manifest.json").read_text())
    m["artifacts"]["fp32"]["sha256"] = hashlib.sha256(b"someone else's model").hexdigest()
    mbytes = json.dumps(m).encode()
    (release / "manifest.json").write_bytes(mbytes)
    (release / "manifest.json.sha256").write_text(hashlib.sha256(mbytes).hexdigest() + "  manifest.json\n")
    (release / "manifest.json.sig").unlink()


def test_deploy_pubkey_installs_the_trusted_key_and_the_device_then_runs_signed_bundles_only(
    device, bundles, cli, tmp_path, monkeypatch
):
    from edge_gmm.runtime.bundle import generate_keypair

    signer, pub = generate_keypair(tmp_path / "ours")
    signed = _variant(bundles["v1"], tmp_path / "signed", "0.0.5", sign_key=signer)
    code, out, err = cli(*device.args(signed, "--pubkey", str(pub)))
    assert code == 0, err
    trusted = device.home / "trust" / "bundle.pub"
    assert trusted.read_bytes() == pub.read_bytes() and "trusted key installed" in out
    rel = device.current()

    # required once configured: a later deploy without --pubkey cannot bring an unsigned bundle in
    code, out, err = cli(*device.args(bundles["v2"]))
    assert code == 2 and "the device refused the bundle" in err and "not signed" in err and str(trusted) in err
    assert device.current() == rel and not any((device.home / "staging").iterdir())

    _strip_signature_and_swap_model(device.home / rel)
    monkeypatch.setenv("EDGE_GMM_HOME", str(tmp_path / "elsewhere"))  # the release home alone decides
    run = ["run", "--sources", "synth://machine-health", "--mqtt", "none", "--max-windows", "1"]
    code, _, err = cli(*run, "--bundle", device.home / "current")  # what the service runs
    assert code == 2 and "not signed" in err
    shutil.copytree(device.home / rel, tmp_path / "manual")
    monkeypatch.setenv("EDGE_GMM_HOME", str(device.home))
    code, _, err = cli(*run, "--bundle", tmp_path / "manual")  # a manual run of a copy on that device
    assert code == 2 and "not signed" in err

    # every start: the supervisor's restart of the loop refuses the edited release and stays down (exit 2)
    os.kill(device.state()["child_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while device.state().get("state") != "failed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert device.state()["state"] == "failed" and device.state()["last_exit"] == 2
    assert "not signed" in (device.home / "logs" / "edge-gmm.log").read_text()


def test_a_rolled_back_deploy_restores_the_trusted_key_it_replaced(device, bundles, cli, tmp_path):
    from edge_gmm.runtime.bundle import generate_keypair

    assert cli(*device.args(bundles["v1"]))[0] == 0  # unsigned, no trusted key yet
    signer, pub = generate_keypair(tmp_path / "ours")
    broken = _variant(bundles["v1"], tmp_path / "broken", "0.0.9", sign_key=signer, extra=BAD_POSTPROCESS)
    code, _, err = cli(*device.args(broken, "--pubkey", str(pub), "--timeout", "60"))
    assert code == 2 and "rolled back to releases/fingerprint-0.0.1-" in err and "online again" in err
    assert not (device.home / "trust" / "bundle.pub").exists()  # the unsigned v1 runs as before
    assert device.status()["model"]["version"] == "0.0.1"


def test_a_model_the_device_cannot_load_is_refused_by_the_engine_check_before_the_switch(running, bundles, cli):
    before = running.state()["child_pid"]
    code, out, err = cli(*running.args(bundles["broken"], "--timeout", "60"))
    assert code == 2, out
    assert "the engine check failed on the device: the device's doctor refused the bundle" in err
    assert "cannot load this model" in err and "nothing was switched" in err and "result:   refused" in out
    assert running.current().startswith("releases/fingerprint-0.0.1-") and running.state()["child_pid"] == before


def test_a_new_release_whose_loop_fails_to_start_is_rolled_back(running, bundles, cli):
    code, out, err = cli(*running.args(bundles["bad_post"], "--timeout", "60"))
    assert code == 2
    assert "rolled back to releases/fingerprint-0.0.1-" in err and "online again" in err
    # why: the loop's first crash ended the wait (not the 60 s timeout), with the loop's own last log lines
    assert "exited with code 2 before reporting online" in err and "unknown key 'bogus'" in err
    assert running.current().startswith("releases/fingerprint-0.0.1-")
    assert not (running.home / "previous").exists()  # restored as it was: v1 had no predecessor
    assert running.status()["model"]["version"] == "0.0.1"
    assert _alive(running.state()["child_pid"])


def _with_golden(base: Path, out: Path, version: str, sign_key: Path, *, alter: bool = False) -> Path:
    """`base` under another version, signed, carrying golden windows whose references its own FP32 ONNX computed
    (`alter`: then swapped for other classes and re-signed, so every hash and the signature still verify)."""
    import numpy as np

    from edge_gmm.runtime.bundle import Bundle
    from edge_gmm.runtime.golden import attach_golden
    from edge_gmm.runtime.runners.onnxrt import OnnxRuntimeRunner

    b = Bundle.open(_variant(base, out, version, sign_key=sign_key))
    rng = np.random.default_rng(3)
    feeds = [{t.name: rng.normal(size=t.shape).astype(t.dtype) for t in b.inputs} for _ in range(8)]
    for f in feeds:
        f["mask"] = (rng.random(f["mask"].shape) > 0.3).astype(np.float32)
    with OnnxRuntimeRunner(b) as r:
        rows = [r.infer(f) for f in feeds]
    refs = {t.name: np.stack([row[t.name] for row in rows]) for t in b.outputs}
    if alter:
        refs["logits_state"] = np.roll(refs["logits_state"], 1, axis=-1)  # every top-1 moves to another class
    attach_golden(out, feeds, refs, sign_key=sign_key)
    return out


def test_deploy_checks_the_engine_on_the_device_and_refuses_to_switch_to_one_that_disagrees(device, bundles, cli, tmp_path):
    from edge_gmm.runtime.bundle import generate_keypair

    signer, pub = generate_keypair(tmp_path / "ours")
    good = _with_golden(bundles["v1"], tmp_path / "good", "0.1.0", signer)
    code, out, err = cli(*device.args(good, "--pubkey", str(pub)))
    assert code == 0, err
    assert "[6/9] check engine" in out and "onnxrt fp32: 8 golden windows agree with fp32 (state 100.0%" in out
    rel, pid = device.current(), device.state()["child_pid"]

    bad = _with_golden(bundles["v1"], tmp_path / "bad", "0.1.1", signer, alter=True)
    code, out, err = cli(*device.args(bad, "--pubkey", str(pub)))
    assert code == 2, out
    assert "verified on the device" in out  # hashes and signature passed: only the numbers are wrong
    assert "result:   mismatch" in out and "top-1 agreement with fp32 0.0%" in out  # the report, printed
    assert "the engine check failed on the device: this engine is not the model you validated" in err
    assert "nothing was switched" in err and "[7/9]" not in out
    assert device.current() == rel and device.state()["child_pid"] == pid and _alive(pid)  # the old release runs on
    assert device.status()["model"]["version"] == "0.1.0"
    assert not any("0.1.1" in p.name for p in (device.home / "releases").iterdir())  # the refused release is gone


def test_a_wrong_key_is_refused_here_and_the_profile_must_fit(device, bundles, cli, tmp_path):
    from edge_gmm.runtime.bundle import generate_keypair

    signer, _ = generate_keypair(tmp_path / "ours")
    _, stranger = generate_keypair(tmp_path / "theirs")
    signed = _variant(bundles["v1"], tmp_path / "signed", "0.0.5", sign_key=signer)
    code, out, err = cli(*device.args(signed, "--pubkey", str(stranger)))
    assert code == 2 and "fails verification here" in err and "manifest.json.sig" in err and "signature" in err
    assert not device.home.exists()  # nothing was sent

    args = device.args(signed)
    args[args.index("cpu-x86_64")] = "jetson-orin-nano"
    code, out, err = cli(*args)
    assert code == 2 and "x86_64 but profile jetson-orin-nano is for aarch64" in err
    assert "[2/9]" not in out  # stopped at the check, before touching anything


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


def test_a_source_whose_engine_the_device_lacks_is_refused_before_any_upload(device, bundles, cli, tmp_path):
    """The README's sources file feeds a microphone; without sounddevice on the device the loop could only fail
    at its first start (and be rolled back). The probe imports what each source needs, so deploy stops at step 1."""
    sources = tmp_path / "sources.yaml"
    sources.write_text("audio: audio://default\nimu: synth://machine-health\n")
    shadow = tmp_path / "shadow"  # this machine has sounddevice (the record tests use it): the device must not
    shadow.mkdir()
    (shadow / "sounddevice.py").write_text("raise ImportError('No module named sounddevice')\n")
    python = tmp_path / "device-python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={shadow} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    code, out, err = cli(*device.args(bundles["v1"], "--sources", str(sources), "--remote-python", str(python)))
    assert code == 2, out + err
    assert "audio://default needs sounddevice" in err and "edge-gmm[audio]" in err
    assert "[2/9]" not in out  # nothing packaged, nothing uploaded
    assert not (device.home / "releases").exists() or not any((device.home / "releases").iterdir())
