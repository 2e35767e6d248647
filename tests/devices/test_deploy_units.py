"""Deploy pieces without a device: host parsing, the rendered systemd unit and env file, the supervisor, dry-run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_gmm.devices.deploy.supervisor import Paths, expand, read_env_file, read_state
from edge_gmm.devices.deploy.target import SshTarget
from edge_gmm.devices.deploy.unit import ServiceSpec, mask_password, render_env, render_unit, systemd_quote
from edge_gmm.errors import ConfigError
from edge_gmm.runtime.bundle import generate_keypair, load_private_key
from test_loop_kit import make_bundle


def test_host_forms():
    assert SshTarget.parse("nvidia@jetson.local") == SshTarget("nvidia", "jetson.local", 22)
    t = SshTarget.parse("nvidia@192.168.1.42:2222")
    assert (t.host, t.port, t.destination, str(t)) == ("192.168.1.42", 2222, "nvidia@192.168.1.42", "nvidia@192.168.1.42:2222")
    assert SshTarget.parse("root@[fe80::1]:2200").host == "fe80::1"
    for bad in ("", "user@", "user@host:99999", "user@host:port"):
        with pytest.raises(ConfigError):
            SshTarget.parse(bad)


def _spec(**kw) -> ServiceSpec:
    base = dict(device_id="jetson-01", home="/home/nvidia/edge-gmm", launcher=["/home/nvidia/venv/bin/edge-gmm"],
                sources="/home/nvidia/edge-gmm/config/sources.yaml", user="nvidia", model="gmm 1.2",
                env_file="/etc/edge-gmm/edge-gmm.env")  # fmt: skip
    return ServiceSpec(**{**base, **kw})


def test_unit_runs_edge_gmm_run_on_current_with_secrets_only_in_the_env_file():
    url = "mqtts://dev:s3cret@broker.lan:8883"
    unit = render_unit(_spec())
    env, shown = render_env(_spec(), url)
    lines = dict(l.split("=", 1) for l in unit.splitlines() if "=" in l and not l.startswith("#"))
    assert lines["ExecStart"] == (
        "/home/nvidia/venv/bin/edge-gmm run --bundle /home/nvidia/edge-gmm/current "
        "--sources /home/nvidia/edge-gmm/config/sources.yaml --mqtt ${EDGE_GMM_MQTT} --device-id jetson-01 "
        "--spool-dir /home/nvidia/edge-gmm/spool"
    )
    assert lines["EnvironmentFile"] == "/etc/edge-gmm/edge-gmm.env" and lines["User"] == "nvidia"
    assert lines["Restart"] == "on-failure" and lines["RestartPreventExitStatus"] == "2"
    assert not re.search(r"\{\{\w+\}\}", unit) and "s3cret" not in unit
    assert f"EDGE_GMM_MQTT={url}" in env and "s3cret" not in shown and "dev:***@broker.lan" in shown
    assert mask_password("mqtt://broker:1883") == "mqtt://broker:1883"


def test_unit_arguments_are_quoted_for_systemd():
    assert systemd_quote("/plain/path") == "/plain/path"
    assert systemd_quote("replay:///data/my set?loop=1") == '"replay:///data/my set?loop=1"'
    assert systemd_quote("50%") == "50%%"  # '%' starts a systemd specifier
    unit = render_unit(_spec(sources="replay:///data/a b", extra_args=["--speed", "1"]))
    assert '--sources "replay:///data/a b"' in unit and unit.rstrip().endswith("WantedBy=multi-user.target")


def test_env_file_and_expansion_follow_systemd():
    assert expand(["--mqtt", "${EDGE_GMM_MQTT}", "x${MISSING}y"], {"EDGE_GMM_MQTT": "mqtt://u:p w@h"}) == [
        "--mqtt", "mqtt://u:p w@h", "xy"]  # fmt: skip


def test_read_env_file(tmp_path):
    f = tmp_path / "e.env"
    f.write_text('# comment\n\nA=1\nB="two words"\nC=\'x=y\'\n')
    assert read_env_file(str(f)) == {"A": "1", "B": "two words", "C": "x=y"}


def _sup(run_dir: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "edge_gmm.devices.deploy.supervisor", *args[:1], "--run-dir", str(run_dir),
                          *args[1:]], capture_output=True, text=True, timeout=30)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_supervisor_daemonizes_with_a_pid_file_and_stops_its_command(tmp_path):
    env = tmp_path / "loop.env"
    env.write_text("GREETING=hello there\n")
    env.chmod(0o600)
    log = tmp_path / "loop.log"
    state = _sup(tmp_path / "run", "start", "--env-file", str(env), "--log", str(log), "--",
                 "sh", "-c", 'echo "$0"; exec sleep 60', "${GREETING}")  # fmt: skip
    try:
        assert state["state"] == "running" and Path(f"/proc/{state['child_pid']}").exists()
        assert (tmp_path / "run" / "edge-gmm.pid").read_text() == str(state["supervisor_pid"])
        deadline = time.monotonic() + 5
        while "hello there" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "hello there" in log.read_text()  # ${VAR} from the env file, one argument
    finally:
        stopped = _sup(tmp_path / "run", "stop")
    assert stopped["state"] == "stopped" and stopped["supervisor_pid"] is None
    assert not Path(f"/proc/{state['child_pid']}").exists() or _zombie(state["child_pid"])
    assert not (tmp_path / "run" / "edge-gmm.pid").exists()


def test_supervisor_start_returns_once_the_command_runs_not_at_the_pid_file(tmp_path):
    # a FIFO env file holds the daemon after its pid file, before the command starts (as a loaded box does)
    env = tmp_path / "slow.env"
    os.mkfifo(env)
    threading.Timer(1.0, lambda: env.write_text("A=1\n")).start()
    state = _sup(tmp_path / "run", "start", "--env-file", str(env), "--log", str(tmp_path / "l.log"), "--",
                 "sleep", "60")  # fmt: skip
    try:
        assert state["state"] == "running" and state["child_pid"]
    finally:
        _sup(tmp_path / "run", "stop")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_supervisor_does_not_restart_a_configuration_error(tmp_path):
    _sup(tmp_path / "run", "start", "--log", str(tmp_path / "l.log"), "--", "sh", "-c", "exit 2")
    deadline = time.monotonic() + 10
    while read_state(Paths(str(tmp_path / "run"), "edge-gmm"))["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    state = read_state(Paths(str(tmp_path / "run"), "edge-gmm"))
    assert state["state"] == "failed" and state["last_exit"] == 2 and state["restarts"] == 0
    assert "not restarting" in (tmp_path / "l.log").read_text()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("dry") / "bundle")


def test_dry_run_prints_every_command_and_file_and_connects_to_nothing(bundle, tmp_path, cli, monkeypatch):
    # an `ssh` first on PATH that records any call: a dry run must never run it
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text(f"#!/bin/sh\ntouch {tmp_path}/ssh-was-called\nexit 255\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    sources = tmp_path / "sources.yaml"
    sources.write_text("imu: synth://machine-health\n")
    priv, pub = generate_keypair(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "bundle")  # signed: deploy verifies it here first, with --pubkey
    (bundle / "manifest.json.sig").write_bytes(load_private_key(priv).sign((bundle / "manifest.json").read_bytes()))
    code, out, err = cli("deploy", bundle, "--host", "nvidia@192.0.2.10:2222", "--profile", "jetson-orin-nano",
                         "--sources", sources, "--mqtt", "mqtt://dev:s3cret@broker.lan:1883", "--device-id", "jetson-01",
                         "--pubkey", pub, "--spool-max-mb", "0.5", "--dry-run")  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "ssh-was-called").exists()
    home = "/home/nvidia/edge-gmm"
    expected = [
        "dry run",
        "ssh -p 2222 nvidia@192.0.2.10",
        "python3 - ''",  # the device probe
        "pip install --upgrade '/home/nvidia/edge-gmm/wheels/edge_gmm-",  # install path (device assumed fresh)
        "[device]'",
        f"> upload {bundle}/ -> {home}/staging/fingerprint-0.0.1-",
        "model.fp32.onnx",
        "edge-gmm bundle verify /home/nvidia/edge-gmm/staging/fingerprint-0.0.1-",
        f"--pubkey {home}/config/bundle.pub",
        "edge-gmm engine build /home/nvidia/edge-gmm/releases/fingerprint-0.0.1-",  # the Orin Nano has TensorRT
        "edge-gmm doctor --bundle /home/nvidia/edge-gmm/releases/fingerprint-0.0.1-",  # checked before the switch
        f"ln -sfn releases/fingerprint-0.0.1-",
        f"mv -T {home}/.current.tmp {home}/current",
        f"> write {home}/config/sources.yaml",
        f"> write {home}/config/edge-gmm.env (mode 0600",
        "EDGE_GMM_MQTT=mqtt://dev:***@broker.lan:1883",
        f"ExecStart=edge-gmm run --bundle {home}/current --sources {home}/config/sources.yaml --mqtt ${{EDGE_GMM_MQTT}} "
        "--device-id jetson-01 --spool-dir /home/nvidia/edge-gmm/spool --spool-max-mb 0.5",
        f"> write {home}/trust/bundle.pub",  # the device's trusted key from now on
        "install -m 0600 -o root -g root",
        "systemctl daemon-reload",
        "systemctl restart edge-gmm",
    ]
    for piece in expected:
        assert piece in out, piece
    assert "s3cret" not in out + err
    assert [l[:5] for l in out.splitlines() if l.startswith("[")] == [f"[{i}/9]" for i in range(1, 10)]


def test_sources_must_be_a_local_file_or_a_uri(bundle, cli):
    code, _, err = cli("deploy", bundle, "--host", "a@b", "--profile", "cpu-x86_64", "--sources", "no/such/sources.yaml",
                       "--mqtt", "mqtt://h", "--dry-run")  # fmt: skip
    assert code == 2 and "--sources no/such/sources.yaml: no such file" in err


def test_unknown_profile_fails_before_any_connection(bundle, cli):
    code, _, err = cli("deploy", bundle, "--host", "a@b", "--profile", "jetson-orin-nan", "--sources", "synth://x",
                       "--mqtt", "mqtt://h")  # fmt: skip
    assert code == 2 and "did you mean 'jetson-orin-nano'" in err


def test_templates_ship_with_the_repository():
    root = Path(__file__).resolve().parents[2] / "devices"
    assert (root / "systemd" / "edge-gmm.service.in").is_file() and (root / "systemd" / "edge-gmm.env.in").is_file()
    rules = (root / "udev" / "99-edge-gmm-serial.rules").read_text()
    assert 'GROUP="dialout"' in rules and "ID_MM_DEVICE_IGNORE" in rules


def test_the_engine_check_opens_the_engine_the_service_will_run(bundle, cli):
    from edge_gmm.devices.deploy.engine_check import run_flags

    assert run_flags(["--speed", "1", "--runner", "onnxrt", "--precision=fp16", "--threads", "2"]) == \
        ["--runner", "onnxrt", "--precision=fp16", "--threads", "2"]
    code, out, err = cli("deploy", bundle, "--host", "nvidia@192.0.2.10", "--profile", "jetson-orin-nano",
                         "--sources", "synth://machine-health", "--mqtt", "mqtt://broker.lan", "--device-id", "j1",
                         "--run-args", "--runner tensorrt --speed 1", "--dry-run")  # fmt: skip
    assert code == 0, err
    doctor = next(line for line in out.splitlines() if "edge-gmm doctor --bundle" in line)
    assert "--json --runner tensorrt" in doctor and "--speed" not in doctor
    assert out.index("[6/9] check engine") < out.index("edge-gmm doctor --bundle") < out.index("[7/9] switch")
