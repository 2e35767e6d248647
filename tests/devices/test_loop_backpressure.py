"""When inference falls behind, the loop drops the OLDEST windows, counts them, and no window waits long."""

import pytest

from edge_gmm.devices.job import RunSettings, run_device
from test_loop_kit import make_bundle, small_dataset  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("slow") / "bundle", heavy=10)  # ~40 ms per inference here


def test_a_slow_model_drops_the_oldest_windows_and_counts_them(small_dataset, slow_bundle):  # noqa: F811
    # replay at 40x: a window every 12.5 ms against ~40 ms of inference
    s = run_device(RunSettings(bundle=str(slow_bundle), sources=f"replay://{small_dataset}?loop=1", mqtt="none",
                               device_id="slow", speed=40.0, max_seconds=2.0, queue_windows=2, threads=1))
    assert s["dropped_windows"] > 0 and s["predictions"] > 0
    assert s["windows"] == s["predictions"] + s["dropped_windows"] + s["queue"]  # every window accounted for
    lat = s["latency_ms"]
    # Dropping the oldest bounds the wait: a window waits for at most the queue ahead of it and the one in
    # flight. Dropping the newest (or an unbounded queue) would let the wait grow with the run instead.
    assert lat["queue"]["max"] <= (2 + 1) * lat["infer"]["max"] + 50


def test_replay_at_max_speed_never_drops(small_dataset, slow_bundle):  # noqa: F811
    s = run_device(RunSettings(bundle=str(slow_bundle), sources=f"replay://{small_dataset}", mqtt="none",
                               device_id="slow", speed=float("inf"), queue_windows=2, threads=1))
    assert s["dropped_windows"] == 0 and s["dropped_chunks"] == 0
    assert s["predictions"] == s["windows"] >= 14 and s["reason"] == "sources ended"
