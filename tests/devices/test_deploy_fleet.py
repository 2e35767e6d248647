"""`edge-gmm deploy --inventory` and `edge-gmm device status --inventory` against several REAL sshd servers on
loopback (each its own port, host key and user key) and a real mosquitto: canary, parallel, skip, keep-going."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port
from test_deploy_sshd import Device, Sshd, broker, bundles, sshd  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def second_sshd(sshd, tmp_path_factory):  # noqa: F811
    server = Sshd(tmp_path_factory.mktemp("sshd-b")).start()
    yield server
    server.stop()


def _host(server: Sshd, dev: Device, **extra) -> dict:
    return {"host": server.host, "device_id": dev.device_id, "identity": str(server.user_key),
            "known_hosts": str(server.known_hosts), "remote_home": str(dev.home), **extra}


def _inventory(path: Path, hosts: list[dict], broker, **defaults) -> Path:  # noqa: F811
    base = {"profile": "cpu-x86_64", "sources": "synth://machine-health", "mqtt": broker.url,
            "remote_python": sys.executable, "systemd": False, **defaults}
    path.write_text(json.dumps({"defaults": base, "hosts": hosts}))
    return path


def _ha_configs(broker, n: int) -> list[str]:  # noqa: F811
    out = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "-t", "homeassistant/#", "-v", "-W", "3"],
                         capture_output=True, text=True, timeout=10)
    return [line.split(" ", 1)[0] for line in out.stdout.splitlines() if line.strip()]


def _wait_online(dev: Device, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = dev.status()
        if st.get("state") == "online" or time.monotonic() > deadline:
            return st
        time.sleep(0.3)


def test_a_fleet_deploys_canary_first_then_in_parallel_and_device_status_lists_every_host(
        sshd, second_sshd, broker, bundles, tmp_path, cli):  # noqa: F811
    a = Device(sshd, broker, tmp_path / "a-home", "line-a")
    b = Device(second_sshd, broker, tmp_path / "b-home", "line-b")
    inv = _inventory(tmp_path / "fleet.json", [_host(sshd, a), _host(second_sshd, b)], broker, ha_discovery="on")
    try:
        code, out, err = cli("deploy", str(bundles["v1"]), "--inventory", str(inv), "--accept-new-host-key",
                             "--timeout", "40", "--canary", "1", "--json")
        assert code == 0, err
        res = json.loads(out)
        assert [h["result"] for h in res["hosts"]] == ["ok", "ok"] and res["ok"] == 2
        assert {h["device_id"] for h in res["hosts"]} == {"line-a", "line-b"}
        assert all(h["version"] == "0.0.1" for h in res["hosts"])
        assert "[line-a] [1/9]" in err and "[line-b] [1/9]" in err  # step lines carry the device id
        assert err.index("canary ok on 1 host") < err.index("[line-b] [1/9]")  # b started after a succeeded
        for dev in (a, b):
            assert _wait_online(dev)["model"]["version"] == "0.0.1"
        topics = _ha_configs(broker, 2)
        assert any("line_a" in t or "line-a" in t for t in topics) and any("line_b" in t or "line-b" in t for t in topics)

        code, out, err = cli("device", "status", "--inventory", str(inv), "--accept-new-host-key")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:5] == ["host", "device", "state", "release", "version"]
        for dev in (a, b):
            row = next(line for line in lines if dev.device_id in line)
            assert "running" in row and "0.0.1" in row
        code, out, _ = cli("device", "status", "--inventory", str(inv), "--json")
        assert [h["state"] for h in json.loads(out)["hosts"]] == ["running", "running"]
    finally:
        a.stop()
        b.stop()


def test_a_failing_canary_skips_the_rest_and_keep_going_deploys_past_a_failure(
        sshd, broker, bundles, tmp_path, cli):  # noqa: F811
    nowhere = Device(sshd, broker, tmp_path / "x-home", "gone")
    good = Device(sshd, broker, tmp_path / "g-home", "good")
    dead = {**_host(sshd, nowhere), "host": f"root@127.0.0.1:{free_port()}"}  # nothing listens there
    inv = _inventory(tmp_path / "fleet.json", [dead, _host(sshd, good)], broker)
    try:
        code, out, err = cli("deploy", str(bundles["v1"]), "--inventory", str(inv), "--accept-new-host-key",
                             "--timeout", "40", "--canary", "1")
        assert code == 2, out
        assert "canary failed: the other 1 host(s) are skipped" in out
        rows = {line.split()[1]: line for line in out.splitlines() if line.startswith(("root@", "127."))}
        assert "failed" in rows["gone"] and "skipped" in rows["good"] and "0/2 hosts ok" in out
        assert not (good.home / "current").exists()  # the skipped device was never touched

        code, out, err = cli("deploy", str(bundles["v1"]), "--inventory", str(inv), "--accept-new-host-key",
                             "--timeout", "40", "--keep-going", "--parallel", "1", "--json")
        assert code == 2
        res = {h["device_id"]: h for h in json.loads(out)["hosts"]}
        assert res["gone"]["result"] == "failed" and res["gone"]["error"]
        assert res["good"]["result"] == "ok" and (good.home / "current").exists()
    finally:
        good.stop()


@pytest.mark.parametrize("hosts, defaults, message", [
    ([{"host": "a@b", "devcie_id": "x"}], {}, "unknown key 'hosts[0].devcie_id' (did you mean 'device_id'?)"),
    ([{"device_id": "x"}], {}, "hosts[0] has no host"),
    ([{"host": "a@b", "device_id": "x"}, {"host": "a@c", "device_id": "x"}], {}, "share device_id 'x'"),
    ([], {}, "no hosts"),
    ([{"host": "a@b"}], {"host": "c@d"}, "defaults.host"),
])
def test_a_bad_inventory_exits_2_naming_the_key_before_any_connection(hosts, defaults, message, broker, bundles, tmp_path, cli):  # noqa: F811
    inv = _inventory(tmp_path / "fleet.json", hosts, broker, **defaults)
    code, out, err = cli("deploy", str(bundles["v1"]), "--inventory", str(inv))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert "[1/9]" not in out + err


def test_host_and_inventory_are_exclusive_and_host_needs_profile_sources_mqtt(bundles, tmp_path, cli, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        cli("deploy", str(bundles["v1"]), "--host", "a@b", "--inventory", "x.toml")
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    code, _, err = cli("deploy", str(bundles["v1"]), "--host", "a@b", "--profile", "cpu-x86_64")
    assert code == 2 and "deploy --host needs --sources, --mqtt" in err


def test_parallel_deploys_build_the_checkouts_wheel_once(monkeypatch, tmp_path):
    """Devices lacking edge-gmm get the wheel built here; two `pip wheel` runs of one checkout would race."""
    import threading

    from edge_gmm.devices.deploy import local

    builds = []
    monkeypatch.setattr(local, "build_wheel", lambda explicit=None: builds.append(explicit) or tmp_path / (explicit or "built.whl"))
    shared = local.SharedWheel()
    start = threading.Barrier(4)
    got = []
    threads = [threading.Thread(target=lambda: (start.wait(), got.append(shared(None)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert builds == [None] and got == [tmp_path / "built.whl"] * 4
    assert shared("given.whl") == tmp_path / "given.whl" and builds == [None, "given.whl"]  # a --wheel file: as it is
