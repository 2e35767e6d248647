"""`edge-gmm subscribe` for scripts (--json, --count, --timeout) and its seq gap/duplicate report."""

import json
import subprocess
import time

from conftest import free_port

from edge_gmm.mqtt.payload import example_prediction
from edge_gmm.mqtt.publisher import Publisher
from edge_gmm.mqtt.subscriber import SeqTracker, Subscriber
from edge_gmm.mqtt.url import parse_mqtt_url


def register_session(url: str, device: str, client_id: str) -> None:
    """A persistent session subscribed on the broker, so nothing published from now on is missed (no sleeps)."""
    Subscriber(parse_mqtt_url(url), device, client_id=client_id).start().stop()


def test_json_count_prints_exactly_n_valid_lines(mosquitto, tmp_path, cli):
    register_session(mosquitto.url, "dev1", "script")
    pub = Publisher(parse_mqtt_url(mosquitto.url), "dev1", spool_dir=tmp_path / "spool").start()
    for _ in range(8):
        pub.publish_prediction(example_prediction("dev1"))
    pub.stop()  # drains: all 8 are on the broker, queued for the 'script' session
    code, out, err = cli("subscribe", "--mqtt", mosquitto.url, "--device", "dev1", "--client-id", "script",
                         "--json", "--count", "5", "--timeout", "10", "--validate")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 5
    assert [json.loads(x)["seq"] for x in lines] == [0, 1, 2, 3, 4]


def test_gaps_and_duplicates_are_reported(mosquitto, cli):
    register_session(mosquitto.url, "+", "watch")
    for seq in (0, 1, 3, 3, 4):  # a third-party publisher with a gap (2) and a duplicate (3)
        body = json.dumps({**example_prediction("devx"), "seq": seq, "ts": 1.0})
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", "edge-gmm/v1/devx/prediction",
                        "-m", body], check=True)
    code, out, err = cli("subscribe", "--mqtt", mosquitto.url, "--client-id", "watch", "--count", "5", "--timeout", "10")
    assert code == 0
    assert "devx  seq 3" in out and "[gap]" in out and "[duplicate]" in out
    assert "1 missing (gaps), 1 duplicates" in err


def test_timeout_before_count_exits_1(mosquitto, cli):
    t0 = time.monotonic()
    code, out, err = cli("subscribe", "--mqtt", mosquitto.url, "--count", "3", "--timeout", "1")
    assert code == 1 and "timeout: 0 of 3" in err
    assert time.monotonic() - t0 < 4


def test_no_broker_exits_2_with_a_hint(cli):
    code, out, err = cli("subscribe", "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--timeout", "1")
    assert code == 2 and "cannot reach the broker" in err and "Traceback" not in err


def test_seq_tracker_tells_gaps_late_arrivals_duplicates_and_resets():
    t = SeqTracker()
    assert [t.add(s) for s in (0, 1, 4)] == ["ok", "ok", "gap"]
    assert t.gaps == 2
    assert t.add(2) == "late" and t.gaps == 1  # a resend filling the gap is not a duplicate
    assert t.add(4) == "duplicate" and t.duplicates == 1
    assert t.add(0) == "reset" and t.gaps == 0 and t.add(1) == "ok"
    joined_late = SeqTracker()
    assert [joined_late.add(s) for s in (500, 501)] == ["ok", "ok"] and joined_late.gaps == 0


def test_validate_counts_payloads_that_break_the_schema(mosquitto, cli):
    register_session(mosquitto.url, "+", "strict")
    bad = {**example_prediction("devy"), "seq": 0, "ts": 1.0, "sensors": {"imu": "on fire"}}
    good = {**example_prediction("devy"), "seq": 1, "ts": 1.0}
    for body in (bad, good):
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", "edge-gmm/v1/devy/prediction",
                        "-m", json.dumps(body)], check=True)
    code, out, err = cli("subscribe", "--mqtt", mosquitto.url, "--client-id", "strict", "--validate", "--json",
                         "--count", "1", "--timeout", "10")
    assert code == 0 and [json.loads(x)["seq"] for x in out.splitlines()] == [1]
    assert "1 invalid" in err


def test_bad_payloads_are_counted_and_reception_and_gap_detection_go_on(mosquitto, cli, tmp_path):
    register_session(mosquitto.url, "+", "tough")
    bomb = tmp_path / "bomb"
    bomb.write_bytes(b"[" * 50_000)  # json.loads would raise RecursionError in paho's thread
    bodies = [json.dumps({**example_prediction("devz"), "seq": 0, "ts": 1.0}), bomb,
              json.dumps({**example_prediction("devz"), "seq": "zero", "ts": 1.0}), tmp_path / "huge", "[1, 2]",
              json.dumps({**example_prediction("devz"), "seq": 1, "ts": 1.0}),
              json.dumps({**example_prediction("devz"), "seq": 3, "ts": 1.0})]  # 2 is missing
    (tmp_path / "huge").write_bytes(b'{"seq": 2, "pad": "' + b"x" * (1 << 20) + b'"}')
    for body in bodies:
        what = ["-f", str(body)] if isinstance(body, type(tmp_path)) else ["-m", body]
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", "edge-gmm/v1/devz/prediction",
                        *what], check=True)
    code, out, err = cli("subscribe", "--mqtt", mosquitto.url, "--client-id", "tough", "--json",
                         "--count", "3", "--timeout", "10")
    assert code == 0 and [json.loads(x)["seq"] for x in out.splitlines()] == [0, 1, 3]
    assert "1 missing (gaps)" in err and "4 bad payloads" in err
