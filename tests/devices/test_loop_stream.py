"""The loop streams (issue 15): each modality's encoder graph runs once per token as samples arrive, the fusion graph
runs at --rate over a cache of the last window's tokens with per-token masks.

Real parts: the fingerprint bundle's whole-window graph and its streaming split (test_loop_kit.make_bundle) run by
onnxruntime, replayed datasets, the virtual MCU on a pty, the CLI as a separate process. The parity and masking
recordings have regular sample times, half a period off the token grid, so every token span holds its samples
exactly and a whole window is exactly its tokens (jittered times move a sample across a span edge now and then,
which masks that one token: the mask, not the parity, is then what differs).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_gmm.devices.job import RunSettings, run_device
from edge_gmm.firmware_bridge.emulator import VirtualMcu, synthetic_feeds
from edge_gmm.firmware_bridge.transports import PtyTransport
from edge_gmm.mqtt.payload import validate
from test_loop_kit import LABELS, SCENARIO_OPTS, make_bundle, run_cli, tiny_bundle, wait_until  # noqa: F401

SECONDS = 4.0
GAP = (2.0, 2.3)  # imu drops out for 0.3 s: three 0.1 s tokens
MODALITIES = ("imu", "audio", "camera", "env")


def regular_dataset(out, sessions: int = 2, gap: tuple[float, float] | None = None):
    """machine-health sessions with sample i at (i + 0.5) / rate (camera frames at i / rate: every sensor's data
    then covers exactly [0, SECONDS)); `gap` removes [a, b) of imu."""
    from edge_gmm.data import synth
    from edge_gmm.data.format import DatasetWriter, Stream

    sc = synth.get_scenario("machine-health", **SCENARIO_OPTS)
    rates = {s.name: s.rate for s in sc.sensors()}
    with DatasetWriter(out, name="regular", sensors=sc.sensors(), tasks=sc.tasks(), window=sc.window()) as w:
        for i in range(sessions):
            s = sc.session(LABELS[i % len(LABELS)], seed=20 + i, duration_s=SECONDS, sid=f"r{i}")
            streams = {}
            for m, st in s.streams.items():  # the synthetic values (it drops some samples), on regular times
                n = int(SECONDS * rates[m])
                t = (np.arange(n) + (0.0 if m == "camera" else 0.5)) / rates[m]
                x = st.x[np.linspace(0, len(st.x) - 1, n).astype(int)]
                keep = np.ones(n, bool) if gap is None or m != "imu" else (t < gap[0]) | (t >= gap[1])
                streams[m] = Stream(t[keep], x[keep])
            s.streams = streams
            w.add(s, "test")
    return out


class Recorder:
    """The loop's runner, keeping every feed and its logits; payloads through the publish callback. One inference
    per prediction (batch 1), so feeds[i] made payloads[i]."""

    def __init__(self):
        self.feeds, self.logits, self.payloads, self.loop = [], [], [], None

    def __call__(self, loop):
        self.loop, runner = loop, loop.runner
        real = runner.infer

        def infer(feed, check=True):
            self.feeds.append({k: v.copy() for k, v in feed.items()})
            out = real(feed, check=check)
            self.logits.append(out["logits_state"][0].copy())
            return out

        runner.infer = infer
        loop.publish = self.payloads.append

    def ends(self) -> list[float]:
        """Window ends in seconds after the grid's origin (the replay's session start)."""
        origin = self.loop.clock.to_wall(self.loop.drivers[0].source.origin)
        return [round(p["window"]["end"] - origin, 6) for p in self.payloads]


def replay(bundle, dataset, **kw) -> tuple[dict, Recorder]:
    rec = Recorder()
    s = run_device(RunSettings(bundle=str(bundle), sources=f"replay://{dataset}", mqtt="none", device_id="stream",
                               speed=float("inf"), threads=1, **kw), on_loop=rec)
    assert (s["reason"], s["exit_code"]) == ("sources ended", 0), s
    return s, rec


@pytest.fixture(scope="module")
def regular(tmp_path_factory):
    return regular_dataset(tmp_path_factory.mktemp("regular") / "ds")


def test_streaming_at_one_per_hop_matches_the_whole_window_graph(tiny_bundle, regular):  # noqa: F811
    s_stream, stream = replay(tiny_bundle, regular)
    s_whole, whole = replay(tiny_bundle, regular, whole_window=True)
    assert s_stream["stream"]["mode"] == "stream" and s_whole["stream"]["mode"] == "whole-window"
    assert set(stream.feeds[0]) == {f"{k}_{m}" for k in ("tokens", "mask") for m in MODALITIES}
    assert "mask" in whole.feeds[0]  # the whole-window graph's feed
    # 1.0 .. 8.5 s: the replay starts the second session on the grid after the first one's last sample, at 4.5 s
    assert stream.ends() == whole.ends() == [1.0 + 0.5 * k for k in range(16)]
    a, b = np.stack(stream.logits), np.stack(whole.logits)
    same = [i for i, q in enumerate(whole.payloads) if set(q["sensors"].values()) == {"ok"}]
    assert len(same) == 14  # every window but the two over the 0.5 s of silence between the sessions
    assert np.abs(a[same] - b[same]).max() <= 1e-4 and (a[same].argmax(1) == b[same].argmax(1)).all()
    for i in same:
        p, q = stream.payloads[i], whole.payloads[i]
        validate("prediction", {**p, "seq": 0, "ts": 0.0})  # the publisher adds seq and ts
        assert p["tasks"]["state"]["label"] == q["tasks"]["state"]["label"] and p["sensors"] == q["sensors"]
        assert all(stream.feeds[i][f"mask_{m}"].all() for m in MODALITIES)  # exactly the whole window's tokens

    # The windows ending at 4.5 and 5.0 s are half data, half the silence in [4.0, 4.5). The whole-window graph
    # loses imu, audio and env (50 % coverage); streaming keeps their five tokens of data and masks the other five.
    gap = sorted(set(range(16)) - set(same))
    assert [stream.ends()[i] for i in gap] == [4.5, 5.0]
    five = np.array([1.0] * 5 + [0.0] * 5, np.float32)
    for i, mask in zip(gap, (five, five[::-1])):
        assert whole.payloads[i]["sensors"] == {"imu": "stale", "audio": "stale", "camera": "ok", "env": "stale"}
        assert stream.payloads[i]["sensors"] == dict.fromkeys(MODALITIES, "ok")
        for m in ("imu", "audio", "env"):
            np.testing.assert_array_equal(stream.feeds[i][f"mask_{m}"][0], mask)


def test_a_03_s_dropout_masks_only_its_tokens(tiny_bundle, tmp_path):  # noqa: F811
    ds = regular_dataset(tmp_path / "gap", sessions=1, gap=GAP)
    s, rec = replay(tiny_bundle, ds, rate=10.0)
    covering = 0
    for end, feed, p in zip(rec.ends(), rec.feeds, rec.payloads):
        starts = end - 1.0 + 0.1 * np.arange(10)  # token i of the window covers [start_i, start_i + 0.1)
        expect = ~((starts >= GAP[0] - 1e-6) & (starts + 0.1 <= GAP[1] + 1e-6))
        np.testing.assert_array_equal(feed["mask_imu"][0], expect.astype(np.float32), err_msg=f"window ending {end}")
        covering += int(not expect.all())
        assert all(feed[f"mask_{m}"].all() for m in MODALITIES[1:])
        assert p["sensors"]["imu"] == "ok"  # a 0.3 s dropout is under imu's 0.5 s timeout: not missing, not stale
    assert covering == 12  # the windows ending in (2.1, 3.3] hold one or more of the three gap tokens
    assert s["assembler"]["spans_masked"]["imu"] == 3

    # The whole-window graph has one mask per modality: those windows lose the whole IMU (coverage 70 %).
    _, whole = replay(tiny_bundle, ds, whole_window=True)
    states = dict(zip(whole.ends(), (p["sensors"]["imu"] for p in whole.payloads)))
    assert states[2.5] == states[3.0] == "stale" and states[2.0] == states[3.5] == "ok"


def test_rate_10_gives_10_predictions_per_second_of_recording(tiny_bundle, tmp_path):  # noqa: F811
    import json

    ds = regular_dataset(tmp_path / "one", sessions=1)
    r = run_cli("run", "--bundle", tiny_bundle, "--sources", f"replay://{ds}", "--mqtt", "none", "--speed", "max",
                "--rate", "10", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # windows end from 1.0 s (a whole window in) to 4.0 s (the recording's end): 3 s at 10 Hz, both ends included
    assert s["predictions"] == s["windows"] == 31
    st = s["stream"]
    assert st["mode"] == "stream" and st["rate_hz"] == 10.0
    # each token is encoded once, whatever the rate: 10 per second for imu / audio / env, one per camera frame
    assert st["encoder_calls"] == {"imu": 40, "audio": 40, "camera": 20, "env": 40}
    assert all(v > 0 for v in st["encode_ms_per_s"].values()) and st["fusion_ms"]["p99"] >= st["fusion_ms"]["p50"] > 0
    assert set(st["tokens_cached"]) == {"imu", "audio", "camera", "env"}
    assert {"fusion", "encode", "infer", "total"} <= set(s["latency_ms"])


def _masked(feed, modality: str = "imu") -> int:
    return int((feed[f"mask_{modality}"][0] == 0).sum())


def _in_gap(feed) -> bool:
    """A window over the IMU's gap: some but not all of its 10 IMU tokens masked."""
    return 0 < _masked(feed) < 10


def _imu_and_env_full(feed) -> bool:
    return bool(feed["mask_imu"].all() and feed["mask_env"].all())


def test_a_burst_released_by_a_late_sensor_fits_the_queue_at_a_high_rate(tiny_bundle, tmp_path):  # noqa: F811
    """Live pacing at 40 predictions/s: an IMU silent for 0.45 s (under its 0.5 s timeout) holds ~18 predictions
    back, released at once when it resumes; an 8-window queue dropped the oldest of them."""
    ds = regular_dataset(tmp_path / "late", sessions=1, gap=(1.5, 1.95))
    s = run_device(RunSettings(bundle=str(tiny_bundle), sources=f"replay://{ds}", mqtt="none", device_id="burst",
                               speed=1.0, threads=1, rate=40.0))
    assert (s["reason"], s["exit_code"]) == ("sources ended", 0), s
    assert s["dropped_windows"] == 0 and s["predictions"] >= 100, s


def test_the_virtual_mcu_over_a_pty_streams_predictions_with_ok_sensors(tiny_bundle, tmp_path):  # noqa: F811
    tr = PtyTransport(tmp_path / "ttyMCU")
    feeds = synthetic_feeds("normal", 0, 10.0)
    feeds[0].lost = (4.0, 4.3)  # the IMU's samples due 4.0-4.3 s into the MCU's run never go out
    mcu = VirtualMcu(feeds, tr)
    stop = threading.Event()
    mcu_thread = threading.Thread(target=mcu.run, kwargs={"seconds": 60.0, "stop_event": stop})
    mcu_thread.start()
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"imu: {tr.port}\nenv: {tr.port}\n")  # audio and camera: not fed (missing)
    rec, summary = Recorder(), {}
    settings = RunSettings(bundle=str(tiny_bundle), sources=str(sources), mqtt="none", device_id="pty", max_seconds=60)
    thread = threading.Thread(target=lambda: summary.update(run_device(settings, on_loop=rec)))
    thread.start()
    try:
        def gap_seen_and_passed() -> bool:
            feeds = list(rec.feeds)
            hit = [i for i, f in enumerate(feeds) if _in_gap(f)]
            return bool(hit) and any(_imu_and_env_full(f) for f in feeds[hit[-1] + 1:])
        wait_until(gap_seen_and_passed, "predictions over the IMU's 0.3 s gap, then a full one", timeout=40.0)
    finally:
        if rec.loop is not None:
            rec.loop.request_stop("test done")
        thread.join(timeout=20)
        stop.set()
        mcu_thread.join()
        tr.close()
    assert summary["reason"] == "test done" and summary["stream"]["mode"] == "stream"
    ok = [p for p in rec.payloads if p["sensors"]["imu"] == "ok"]
    for p in ok:
        validate("prediction", {**p, "seq": 0, "ts": 0.0})  # the publisher adds seq and ts
        assert p["sensors"] == {"imu": "ok", "audio": "missing", "camera": "missing", "env": "ok"}
        assert p["latency_ms"]["fusion"] > 0 and p["latency_ms"]["encode"] >= 0 and p["latency_ms"]["age"] > 0
    assert len(ok) == len(rec.payloads)  # a 0.3 s gap is under the IMU's timeout: its state stays ok throughout
    # live tokens, every one present in some window after the gap (on a loaded machine one env sample may come
    # later than its timeout and mask that token alone: that is the cache's rule, not a fault)
    gap_at = [i for i, f in enumerate(rec.feeds) if _in_gap(f)]
    gap, after = [rec.feeds[i] for i in gap_at], rec.feeds[gap_at[-1] + 1:]
    assert any(_imu_and_env_full(f) for f in after), [(_masked(f), _masked(f, "env")) for f in rec.feeds]
    assert not any(f["mask_audio"].any() or f["mask_camera"].any() for f in rec.feeds)
    # Per-token masks on a live link: the windows over the gap mask only the IMU tokens it emptied (three 0.1 s
    # spans, one or two more where the gap cuts a span below its coverage), never the whole IMU, never env.
    # (At 2 predictions/s some window holds the whole gap; one that holds part of it masks fewer.)
    assert gap and all(_masked(f) <= 5 for f in gap) and max(_masked(f) for f in gap) >= 3
    for f in gap:  # the masked tokens are one run: the gap's
        zeros = np.flatnonzero(f["mask_imu"][0] == 0)
        assert zeros[-1] - zeros[0] + 1 == len(zeros), f["mask_imu"]
    # the IMU's gap masks no env token; at most one, by a late env sample on a loaded machine (as above)
    assert all(_masked(f, "env") <= 1 for f in gap)
    assert mcu.sent["lost_samples"] > 0
    assert summary["stream"]["encoder_calls"]["imu"] > 0 and summary["stream"]["encoder_calls"]["audio"] == 0


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate must be a positive number of predictions per second, got 0.0"),
    (["--rate", "-2"], "--rate must be a positive number"),
    (["--rate", "5", "--whole-window"], "--rate sets the streaming prediction rate; --whole-window"),
])
def test_bad_rate_options_exit_2_with_one_line(tiny_bundle, tmp_path, args, message):  # noqa: F811
    r = run_cli("run", "--bundle", tiny_bundle, "--sources", "synth://machine-health", "--mqtt", "none", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_rate_needs_the_streaming_split(tmp_path):
    from edge_gmm.errors import ConfigError

    bundle = make_bundle(tmp_path / "old", stream=False)  # as exported before the split
    with pytest.raises(ConfigError, match="--rate needs the streaming graphs, but .* without the streaming split"):
        run_device(RunSettings(bundle=str(bundle), sources="synth://machine-health", mqtt="none", device_id="x",
                               rate=4.0))
    new = str(make_bundle(tmp_path / "new"))
    with pytest.raises(ConfigError, match="the torch runner runs the whole-window graph only"):
        run_device(RunSettings(bundle=new, sources="synth://machine-health", mqtt="none", device_id="x", rate=4.0,
                               runner="torch"))
    with pytest.raises(ConfigError, match="its streaming graph 'encoder.imu' has no int8 artifact"):
        run_device(RunSettings(bundle=new, sources="synth://machine-health", mqtt="none", device_id="x", rate=4.0,
                               precision="int8"))
