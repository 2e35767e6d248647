"""Brokers that say no: PUBACK failure reason codes, refused client ids, unsafe device ids (scripted MQTT 5 peer)."""

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mqtt5_peer import Mqtt5Peer
from mqtt_kit import wait_until

from edge_gmm.errors import ConfigError
from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.spool import Spool
from edge_gmm.mqtt.topics import check_device_id
from edge_gmm.mqtt.url import parse_mqtt_url

DEV = "dev1"



def predictions(peer):
    return [p for p in peer.publishes if p.topic.endswith("/prediction")]


def test_refused_pubacks_keep_every_record_spooled_counted_and_logged_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edge_gmm.mqtt")
    with Mqtt5Peer(puback_reason=0x87) as peer:
        pub = Publisher(parse_mqtt_url(peer.url), DEV, spool_dir=tmp_path / "spool").start()
        for _ in range(100):
            pub.publish_prediction(example_prediction(DEV))
        assert wait_until(lambda: pub.stats()["rejected"] >= 100)
        st = pub.stats()
        assert st["acked"] == 0 and st["spooled"] == 100 and st["connected"]
        assert st["publish_refused"] == "Not authorized (0x87)"
        refusals = [r for r in caplog.records if "refused a publish" in r.getMessage()]
        assert len(refusals) == 1 and "Not authorized" in refusals[0].getMessage()
        pub.stop(timeout=0.5)
    assert pub.stats()["spooled"] == 100
    with Spool(tmp_path / "spool") as sp:  # all still on disk for the next start
        assert [s for s, _, _ in sp.pending_from(0, 1000)] == list(range(100))


def test_refused_records_are_sent_again_after_a_backoff_not_in_a_hot_loop(tmp_path):
    with Mqtt5Peer(puback_reason=0x97) as peer:  # quota exceeded
        pub = Publisher(parse_mqtt_url(peer.url), DEV, spool_dir=tmp_path / "spool").start()
        for _ in range(20):
            pub.publish_prediction(example_prediction(DEV))
        assert wait_until(lambda: pub.stats()["rejected"] >= 20)
        time.sleep(0.5)  # within the first back-off (1 s) nothing is re-sent
        assert len(predictions(peer)) == 20
        peer.puback_reason = 0  # the broker takes them again
        assert wait_until(lambda: pub.stats()["acked"] == 20, timeout=8)
        assert pub.stats()["spooled"] == 0
        assert sorted({int(p.payload.split(b'"seq":')[1].split(b",")[0]) for p in predictions(peer)}) == list(range(20))
        assert len(predictions(peer)) <= 60  # a few rounds, not thousands
        pub.stop(timeout=1)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_refused_client_id_is_a_config_error_said_once(tmp_path, caplog, protocol):
    with Mqtt5Peer(connack_reason=0x85) as peer:  # 3.1.1: return code 2, identifier rejected
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as e:
            Publisher(parse_mqtt_url(f"{peer.url}?protocol={protocol}"), DEV, spool_dir=tmp_path / "spool").start()
        assert time.monotonic() - t0 < 3
    assert e.value.exit_code == 2
    assert f"refused the client id {DEV!r}" in str(e.value) and "3.1.1 only" not in caplog.text


def test_a_busy_broker_at_start_is_not_an_error(tmp_path):
    with Mqtt5Peer(connack_reason=0x89) as peer:  # server busy: a retry may cure it
        pub = Publisher(parse_mqtt_url(peer.url), DEV, spool_dir=tmp_path / "spool").start()
        pub.publish_prediction(example_prediction(DEV))
        assert pub.stats()["spooled"] == 1 and not pub.stats()["connected"]
        pub.stop(timeout=0.2)


@pytest.mark.parametrize("bad", ["..", "a..b", ".", "a\x00b", "line\nbreak", "esc\x1b[2J", "tab\tid", "zw\u200bsp",
                                 "rtl\u202eid", "a/b", "a+", "#", "back\\slash", " padded", "x" * 129, ""])
def test_check_device_id_refuses_unsafe_ids(bad):
    with pytest.raises(ConfigError, match="device id"):
        check_device_id(bad)


def test_check_device_id_accepts_ordinary_ids():
    for ok in ("jetson-01", "lab.cam_3", "gerät-ü"):
        assert check_device_id(ok) == ok


def test_peer_cli_prints_its_port_and_a_summary():
    peer_py = Path(__file__).with_name("mqtt5_peer.py")
    proc = subprocess.Popen([sys.executable, str(peer_py), "--port", "0", "--puback-reason", "0x87"],
                            stdout=subprocess.PIPE, text=True)
    try:
        word, port = proc.stdout.readline().split()
        assert word == "listening" and int(port) > 0
    finally:
        proc.terminate()
    out, _ = proc.communicate(timeout=5)
    assert out.startswith("summary {")
