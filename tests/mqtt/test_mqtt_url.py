"""Broker URLs: what users type, and that the password never shows."""

import pytest

from edge_gmm.errors import ConfigError
from edge_gmm.mqtt.topics import parse_topic, prediction_topic, status_topic
from edge_gmm.mqtt.url import parse_mqtt_url


def test_plain_url_defaults():
    b = parse_mqtt_url("mqtt://broker.local")
    assert (b.host, b.port, b.tls, b.protocol, b.qos) == ("broker.local", 1883, False, "auto", 1)


def test_credentials_tls_and_options(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    b = parse_mqtt_url(f"mqtts://dev%40site:s3cr%2Ft@10.0.0.2?ca={ca}&protocol=3.1.1&qos=0")
    assert (b.host, b.port, b.tls, b.ca, b.protocol, b.qos) == ("10.0.0.2", 8883, True, str(ca), "3.1.1", 0)
    assert (b.username, b.password) == ("dev@site", "s3cr/t")
    for shown in (repr(b), b.url, b.display(), str(b)):
        assert "s3cr" not in shown


def test_password_file_wins_and_stays_hidden(tmp_path):
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    b = parse_mqtt_url("mqtt://u@host:1999", password_file=f)
    assert (b.username, b.password, b.port) == ("u", "from-file", 1999)
    assert "from-file" not in repr(b)


def test_embedded_forms_pin_mqtt_311():
    for text, port in (("embedded", 1883), ("embedded:0", 0), ("embedded://127.0.0.1:2000", 2000)):
        b = parse_mqtt_url(text)
        assert b.embedded and b.protocol == "3.1.1" and b.port == port


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://x", "scheme"),
        ("mqtt://x?proto=5", "unknown option 'proto'"),
        ("mqtt://x?protocol=4", "protocol"),
        ("mqtt://x?qos=3", "qos"),
        ("mqtts://x?ca=/nonexistent.pem", "no such file"),
        ("mqtt://x:99999", "port"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, words):
    with pytest.raises(ConfigError, match=words):
        parse_mqtt_url(url)


def test_bad_url_error_hides_password():
    with pytest.raises(ConfigError) as e:
        parse_mqtt_url("http://u:hunter2@x")
    assert "hunter2" not in str(e.value)


def test_topics_round_trip_and_reject_wildcards():
    assert prediction_topic("jetson-01") == "edge-gmm/v1/jetson-01/prediction"
    assert parse_topic(status_topic("jetson-01")) == ("jetson-01", "status")
    assert parse_topic("other/topic") is None
    for bad in ("a/b", "a+b", "#", ""):
        with pytest.raises(ConfigError):
            prediction_topic(bad)
