"""Sources by URI, the sources file, replay pacing, and the bounded window queue."""

import importlib.util
import threading
import time

import numpy as np
import pytest

from edge_gmm.devices.loop import DropOldestQueue
from edge_gmm.devices.sources import open_source, parse_speed, parse_uri
from edge_gmm.devices.sources_file import load_sources
from edge_gmm.errors import ConfigError, DataError, MissingDependencyError
from test_loop_kit import make_dataset, scenario_sensors, small_dataset  # noqa: F401  (fixture)


def test_uris_pick_their_transport():
    assert parse_uri("replay://data/mh?loop=1&session=a").scheme == "replay"
    assert parse_uri("replay://data/mh?loop=1").options == {"loop": "1"}
    assert parse_uri("socket://127.0.0.1:5000").target == "127.0.0.1:5000"
    assert parse_uri("/dev/ttyACM0").scheme == "serial"
    assert parse_uri("pty:/tmp/ttyMCU").target == "/tmp/ttyMCU"
    ei = parse_uri("/dev/ttyACM0?format=ei-forwarder&frequency=100")
    assert (ei.scheme, ei.target, ei.options) == ("serial", "/dev/ttyACM0", {"format": "ei-forwarder", "frequency": "100"})
    gst = parse_uri("nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280 ! nvvidconv ! appsink")
    assert gst.scheme == "gstreamer" and gst.target.startswith("nvarguscamerasrc")
    with pytest.raises(ConfigError, match="no scheme") as e:
        parse_uri("data/mh")
    assert "replay://" in str(e.value) and "gstreamer://" not in str(e.value)


def test_an_unknown_scheme_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown source scheme 'rtsp'.*replay.*synth"):
        open_source("rtsp://cam", scenario_sensors())


def test_speed_is_a_factor_or_max():
    assert parse_speed("max") == float("inf") and parse_speed("2.5") == 2.5
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ConfigError, match="--speed"):
            parse_speed(bad)


def test_sources_file_groups_modalities_by_uri_and_keeps_renames_and_timeouts(tmp_path):
    f = tmp_path / "sources.yaml"
    f.write_text(
        "imu: serial:///dev/ttyACM0?baud=115200\n"
        "env: {uri: 'serial:///dev/ttyACM0?baud=115200', sensor: slow, timeout_s: 3}\n"
        "audio: replay://data/mh?loop=1\n"
    )
    plan = load_sources(str(f), scenario_sensors())
    assert [(s.scheme, s.modalities) for s in plan.specs] == [("serial", ["imu", "env"]), ("replay", ["audio"])]
    assert plan.specs[0].rename == {"slow": "env"} and plan.specs[0].options == {"baud": "115200"}
    assert plan.timeouts["env"] == 3 and plan.timeouts["imu"] == 0.5  # the sensor spec's own otherwise
    assert "camera" not in plan.fed


def test_one_port_named_with_and_without_options_is_opened_once(tmp_path):
    f = tmp_path / "sources.yaml"
    f.write_text("imu: serial:///dev/ttyACM0?baud=921600\nenv: serial:///dev/ttyACM0\n")
    (spec,) = load_sources(str(f), scenario_sensors()).specs
    assert spec.modalities == ["imu", "env"] and spec.options == {"baud": "921600"}
    f.write_text("imu: serial:///dev/ttyACM0?baud=921600\nenv: serial:///dev/ttyACM0?baud=115200\n")
    with pytest.raises(ConfigError, match="'imu' and 'env' share '/dev/ttyACM0' but ask for baud=921600 and baud=115200"):
        load_sources(str(f), scenario_sensors())


def test_sources_file_errors_name_the_file_and_key(tmp_path):
    f = tmp_path / "sources.yaml"
    f.write_text("lidar: serial:///dev/ttyACM0\n")
    with pytest.raises(ConfigError, match="'lidar' is not a modality of the bundle"):
        load_sources(str(f), scenario_sensors())
    f.write_text("imu: {uri: serial:///dev/ttyACM0, timeout: 3}\n")
    with pytest.raises(ConfigError, match=r"sources.yaml: unknown key 'imu.timeout' \(did you mean 'timeout_s'\?\)"):
        load_sources(str(f), scenario_sensors())


def test_a_single_uri_feeds_every_modality_or_those_it_names():
    assert load_sources("replay://data/mh", scenario_sensors()).fed == ["imu", "audio", "camera", "env"]
    plan = load_sources("replay://data/mh?modalities=audio,camera&loop=1", scenario_sensors())
    assert plan.fed == ["audio", "camera"] and plan.specs[0].options == {"loop": "1"}


@pytest.mark.parametrize("uri,module", [("audio://default", "sounddevice"), ("camera://0", "cv2")])
def test_hardware_sources_without_their_engine_say_what_to_install(uri, module, monkeypatch):
    find_spec = importlib.util.find_spec  # the dev install has both engines (the record tests use them): hide one
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))
    modality = "audio" if module == "sounddevice" else "camera"
    with pytest.raises(MissingDependencyError, match="need"):
        open_source(uri, [s for s in scenario_sensors() if s.name == modality])


def test_replay_refuses_a_dataset_whose_sensors_differ_from_the_bundle(small_dataset):  # noqa: F811
    from dataclasses import replace

    sensors = [replace(s, rate=100.0) if s.name == "imu" else s for s in scenario_sensors()]
    with pytest.raises(DataError, match="'imu' is imu 200 Hz.*bundle expects imu 100 Hz"):
        open_source(f"replay://{small_dataset}", sensors)


def _play(source, stop=None):
    stop = stop or threading.Event()
    return list(source.stream(stop))


def test_replay_stamps_samples_on_the_host_clock_in_real_time(tmp_path):
    ds = make_dataset(tmp_path / "one", sessions=1, seconds=2.0)
    src = open_source(f"replay://{ds}?modalities=env", scenario_sensors(), speed=2.0)
    t0 = time.monotonic()
    chunks = _play(src)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.8 * 2.0 / 2  # 2 s of data at 2x: not faster than that
    t = np.concatenate([c.t for c in chunks])
    assert np.all(np.diff(t) >= 0) and t[0] >= t0 - 0.1  # host clock, in order
    assert src.origin is not None and (src.origin * 64) % 1 == 0  # the window grid's origin is an exact float


def test_replay_at_max_speed_is_lossless_and_loops(tmp_path):
    ds = make_dataset(tmp_path / "one", sessions=1, seconds=2.0)
    src = open_source(f"replay://{ds}?modalities=imu&loop=1", scenario_sensors(), speed=float("inf"), align_s=0.5)
    assert src.lossless and not src.paced
    stop, n = threading.Event(), 0
    for chunk in src.stream(stop):
        n += len(chunk)
        if src.sessions_played >= 2:
            stop.set()
    session_samples = len(np.load(ds / "sessions" / "s0" / "imu.t.npy"))
    assert n >= 2 * session_samples
    (_, first), (_, second) = list(src.offsets)[:2]
    assert (second - first) % 0.5 == pytest.approx(0.0, abs=1e-9)  # each session starts on the window grid


def test_window_queue_drops_the_oldest_and_counts_it():
    q = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert q.dropped == 7 and len(q) == 3
    assert q.get_many(5, timeout=0) == [7, 8, 9]


def test_window_queue_blocks_a_lossless_producer_until_there_is_room():
    q = DropOldestQueue(2)
    q.put(1), q.put(2)
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(3, block=True), done.set()), daemon=True).start()
    assert not done.wait(0.3)
    assert q.get_many(1, timeout=0) == [1]
    assert done.wait(2.0) and q.dropped == 0 and q.get_many(5, timeout=0) == [2, 3]
