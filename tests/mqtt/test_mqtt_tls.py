"""TLS (own CA, client certificate) and passwords against a real mosquitto; secrets never printed."""

import subprocess
import time

import pytest
from conftest import Mosquitto  # the shared fixture's class; `extra` lines apply to its listener

from edge_gmm.errors import ConfigError
from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.subscriber import Subscriber
from edge_gmm.mqtt.url import parse_mqtt_url

SECRET = "correct-horse-42"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all EC P-256."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edge-gmm test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=other", cwd=d)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "device", SECRET], check=True, capture_output=True)
    return d


@pytest.fixture
def secure_broker(pki, tmp_path):
    """mosquitto with TLS on its listener, client certificates required, no anonymous clients."""
    extra = "\n".join([
        "allow_anonymous false",
        f"password_file {pki / 'passwd'}",
        f"cafile {pki / 'ca.pem'}",
        f"certfile {pki / 'server.pem'}",
        f"keyfile {pki / 'server.key'}",
        "require_certificate true",
    ]) + "\n"
    broker = Mosquitto(tmp_path / "mq", extra=extra).start()
    yield broker
    broker.stop()


def url(pki, broker, password=SECRET, ca="ca.pem"):
    return (f"mqtts://device:{password}@localhost:{broker.port}"
            f"?ca={pki / ca}&cert={pki / 'client.pem'}&key={pki / 'client.key'}")


def test_tls_with_client_cert_and_password_delivers(pki, secure_broker, tmp_path):
    cfg = parse_mqtt_url(url(pki, secure_broker))
    sub = Subscriber(cfg, "dev1").start()
    pub = Publisher(cfg, "dev1", spool_dir=tmp_path / "spool").start()
    for _ in range(20):
        pub.publish_prediction(example_prediction("dev1"))
    got = sub.collect(20, timeout=10)
    pub.stop()
    sub.stop()
    assert [p["seq"] for p in got] == list(range(20))


def test_wrong_password_fails_clearly_without_echoing_it(pki, secure_broker, tmp_path, caplog):
    cfg = parse_mqtt_url(url(pki, secure_broker, password="wrong-" + SECRET))
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:  # exit 2: a restart cannot fix a password
        Publisher(cfg, "dev1", spool_dir=tmp_path / "spool").start()
    assert time.monotonic() - t0 < 6
    assert "refused user 'device'" in str(e.value) and "password" in str(e.value)
    with pytest.raises(ConfigError):
        Subscriber(cfg, "dev1").start()
    assert SECRET not in str(e.value) and SECRET not in caplog.text


def test_untrusted_broker_certificate_is_a_clear_error(pki, secure_broker, tmp_path):
    cfg = parse_mqtt_url(url(pki, secure_broker, ca="other-ca.pem"))
    with pytest.raises(ConfigError, match="cannot verify the certificate"):
        Publisher(cfg, "dev1", spool_dir=tmp_path / "spool").start()


def test_cli_subscribe_wrong_password_exits_2_without_secret(pki, secure_broker, tmp_path, cli):
    pw = tmp_path / "pw"
    pw.write_text("not-" + SECRET + "\n")
    code, out, err = cli("subscribe", "--mqtt", url(pki, secure_broker, password="x").replace("device:x@", "device@"),
                         "--password-file", pw, "--count", "1", "--timeout", "2")
    assert code == 2
    assert "refused user 'device'" in err and "Traceback" not in err
    assert SECRET not in out + err


@pytest.fixture
def tls_only_broker(pki, tmp_path):
    """mosquitto whose only listener is TLS (server certificate, no client certificate needed)."""
    extra = f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
    broker = Mosquitto(tmp_path / "mq", extra=extra).start()
    yield broker
    broker.stop()


def test_plain_mqtt_to_a_tls_port_says_so_and_exits_2(tls_only_broker, pki, tmp_path, caplog, cli):
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        Publisher(parse_mqtt_url(tls_only_broker.url), "dev1", spool_dir=tmp_path / "spool").start()
    assert time.monotonic() - t0 < 4
    assert "TLS listener" in str(e.value) and f"mqtts://127.0.0.1:{tls_only_broker.port}" in str(e.value)
    assert "3.1.1" not in caplog.text  # not the old, misleading "speaks MQTT 3.1.1 only"
    # the same URL with mqtts:// works
    ok = Publisher(parse_mqtt_url(f"mqtts://localhost:{tls_only_broker.port}?ca={pki / 'ca.pem'}"), "dev1",
                   spool_dir=tmp_path / "spool").start()
    assert ok.stats()["connected"]
    ok.stop()
    code, out, err = cli("subscribe", "--mqtt", tls_only_broker.url, "--timeout", "1")
    assert code == 2 and "TLS listener" in err and "Traceback" not in err


def test_mqtts_to_a_plain_port_says_so(mosquitto, pki, tmp_path):
    cfg = parse_mqtt_url(f"mqtts://127.0.0.1:{mosquitto.port}?ca={pki / 'ca.pem'}")
    with pytest.raises(ConfigError, match="speaks plain MQTT, not TLS") as e:
        Publisher(cfg, "dev1", spool_dir=tmp_path / "spool").start()
    assert f"mqtt://127.0.0.1:{mosquitto.port}" in str(e.value) and "not reachable" not in str(e.value)
