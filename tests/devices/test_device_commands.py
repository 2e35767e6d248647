"""`edge-gmm device status|logs|stop|start|restart|rollback|releases` against the REAL sshd + mosquitto of
test_deploy_sshd.py: a device deployed with --no-systemd (no systemd here), then operated over ssh."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from test_deploy_sshd import Device, _alive, broker, bundles, sshd  # noqa: F401  (fixtures)


def _ops(dev: Device, action: str, *extra: str) -> list:
    return [
        "device", action, "--host", dev.sshd.host, "--identity", str(dev.sshd.user_key),
        "--known-hosts", str(dev.sshd.known_hosts), "--accept-new-host-key", "--remote-python", sys.executable,
        "--remote-home", str(dev.home), "--no-systemd", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def deployed(sshd, broker, bundles, tmp_path_factory):  # noqa: F811
    from edge_gmm.cli.main import main

    dev = Device(sshd, broker, tmp_path_factory.mktemp("ops") / "home", "dev-ops")
    assert main(dev.args(bundles["v1"])) == 0
    yield dev
    dev.stop()


def test_status_stop_start_restart_and_logs(deployed, cli):
    dev = deployed
    code, out, err = cli(*_ops(dev, "status"))
    assert code == 0, err
    rel = dev.current().split("/", 1)[1]
    assert "running" in out and rel in out and "0.0.1" in out
    code, out, err = cli(*_ops(dev, "status", "--json"))
    st = json.loads(out)
    assert st["state"] == "running" and st["running"] is True and st["current"] == rel and st["previous"] is None
    assert st["model"]["version"] == "0.0.1" and st["pid"] == dev.state()["child_pid"] and _alive(st["pid"])

    recorded = dev.home / "state" / "edge-gmm.command.json"
    assert recorded.is_file()  # deploy recorded the supervisor's command ...
    recorded.unlink()  # ... and without it (an older deploy) stop reads it from the running supervisor first
    code, out, err = cli(*_ops(dev, "stop"))
    assert code == 0, err
    assert "synth://machine-health" in json.loads(recorded.read_text())["argv"]
    assert "stopped" in out and dev.state()["state"] == "stopped" and not _alive(st["pid"])
    code, out, _ = cli(*_ops(dev, "status", "--json"))
    assert json.loads(out)["state"] == "stopped" and json.loads(out)["running"] is False

    code, out, err = cli(*_ops(dev, "start", "--json"))
    assert code == 0, err
    started = json.loads(out)
    assert started["changed"] is True and started["state"] == "running" and _alive(started["pid"])
    code, out, _ = cli(*_ops(dev, "start"))  # already running: nothing changes
    assert code == 0 and "already running" in out and dev.state()["child_pid"] == started["pid"]

    code, out, err = cli(*_ops(dev, "restart", "--json"))
    assert code == 0, err
    restarted = json.loads(out)
    assert restarted["state"] == "running" and restarted["pid"] != started["pid"] and _alive(restarted["pid"])

    code, out, err = cli(*_ops(dev, "logs", "--lines", "200"))
    assert code == 0, err
    assert "[supervisor] starting:" in out and "command exited with code" in out
    code, out, _ = cli(*_ops(dev, "logs", "-n", "5", "--json"))
    logs = json.loads(out)
    assert len(logs["lines"]) == 5 and logs["log"].startswith("tail -n 5")


def test_rollback_returns_to_the_previous_release_and_releases_lists_both(deployed, bundles, cli):  # noqa: F811
    dev = deployed
    v1 = dev.current().split("/", 1)[1]
    code, out, err = cli(*dev.args(bundles["v2"]))
    assert code == 0, err
    v2 = dev.current().split("/", 1)[1]
    assert "0.0.2" in v2 and dev.status()["model"]["version"] == "0.0.2"

    code, out, err = cli(*_ops(dev, "releases", "--json"))
    assert code == 0, err
    rows = {r["release"]: r for r in json.loads(out)["releases"]}
    assert rows[v2]["current"] and rows[v1]["previous"] and set(rows) == {v1, v2}
    code, out, _ = cli(*_ops(dev, "releases"))
    assert v1 in out and v2 in out and "current" in out and "previous" in out

    before = dev.state()["child_pid"]
    code, out, err = cli(*_ops(dev, "rollback", "--json"))
    assert code == 0, err
    r = json.loads(out)
    assert r["current"] == v1 and r["rolled_back_from"] == v2 and r["state"] == "running"
    assert r["model"]["version"] == "0.0.1"
    assert dev.current() == f"releases/{v1}" and os.readlink(dev.home / "previous") == f"releases/{v2}"
    assert dev.state()["child_pid"] != before and _alive(dev.state()["child_pid"])
    _wait_version(dev, "0.0.1")  # the restarted loop runs the first release again and says so on the broker
    code, out, _ = cli(*_ops(dev, "status", "--json"))
    st = json.loads(out)
    assert st["current"] == v1 and st["running"] and st["model"]["version"] == "0.0.1"


def _wait_version(dev: Device, version: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            st = dev.status()
            if st.get("state") == "online" and st["model"]["version"] == version:
                return
        except (ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"status never showed {version} online"
        time.sleep(0.5)


def test_user_errors_exit_2(sshd, broker, tmp_path, cli):  # noqa: F811
    empty = Device(sshd, broker, tmp_path / "nothing-here", "dev-none")
    code, out, err = cli(*_ops(empty, "status"))
    assert code == 2 and "nothing deployed under" in err and "Traceback" not in err
    code, _, err = cli(*_ops(empty, "rollback"))
    assert code == 2 and "nothing deployed" in err

    strict = _ops(empty, "status")
    strict.remove("--accept-new-host-key")
    strict[strict.index("--known-hosts") + 1] = str(tmp_path / "fresh_known_hosts")
    code, _, err = cli(*strict)
    assert code == 2 and "unknown host key" in err and "--accept-new-host-key" in err


def test_rollback_without_a_previous_release_is_refused(sshd, broker, bundles, tmp_path, cli):  # noqa: F811
    dev = Device(sshd, broker, tmp_path / "home", "dev-single")
    try:
        assert cli(*dev.args(bundles["v1"]))[0] == 0
        code, _, err = cli(*_ops(dev, "rollback"))
        assert code == 2 and "no previous release" in err
        assert Path(dev.home / "current").is_symlink() and dev.state()["state"] == "running"
    finally:
        dev.stop()
