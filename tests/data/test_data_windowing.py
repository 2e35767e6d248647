"""Windowing: fixed grid, mask rules, label overlap rule, and streaming == offline for any chunking."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data import synth
from edge_gmm.data.format import Segment, SensorChunk, Session, Stream
from edge_gmm.data.windowing import StreamingAssembler, window_labels, window_session

SC = synth.get_scenario("machine-health", camera_size=16, audio_rate=4000)
SENSORS, WINDOW, TASKS = SC.sensors(), SC.window(), SC.tasks()


def rig_session() -> Session:
    """A 7 s session with an env outage from 2.0 to 3.6 s, 10 % of imu samples dropped in 4.2..5.2 s,
    and a camera that stops at 5.5 s (the scenario adds its own camera outage 0.84..3.35 s for this seed)."""
    s = SC.session("overheating", seed=11, duration_s=7.0)
    env, imu, cam = s.streams["env"], s.streams["imu"], s.streams["camera"]
    keep = (env.t < 2.0) | (env.t >= 3.6)
    s.streams["env"] = Stream(env.t[keep], env.x[keep])
    drop = (imu.t >= 4.2) & (imu.t < 5.2) & (np.arange(len(imu)) % 10 == 0)
    s.streams["imu"] = Stream(imu.t[~drop], imu.x[~drop])
    keep = cam.t < 5.5
    s.streams["camera"] = Stream(cam.t[keep], cam.x[keep])
    return s


SESSION = rig_session()
OFFLINE = window_session(SESSION, SENSORS, WINDOW, TASKS)


def chunked(session, sizes_seed: int, max_frac: float):
    """Each stream cut into random chunk sizes spanning at most max_frac * stale_after_s of time (as a live
    source delivers them: never holding a sample back across an outage), delivered in time order."""
    rng = np.random.default_rng(sizes_seed)
    chunks = []
    for spec in SENSORS:
        stream = session.streams[spec.name]
        most = max(1, int(spec.stale_after_s * spec.rate * max_frac))
        i = 0
        while i < len(stream):
            n = int(rng.integers(1, most + 1))
            span_end = np.searchsorted(stream.t, stream.t[i] + spec.stale_after_s * max_frac, side="right")
            n = max(1, min(n, int(span_end) - i))
            chunks.append(SensorChunk(spec.name, stream.t[i : i + n], stream.x[i : i + n]))
            i += n
    chunks.sort(key=lambda c: c.t[-1])
    return chunks


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), max_frac=st.sampled_from([0.05, 0.2, 0.5]), pop_every=st.integers(1, 7))
def test_streaming_is_bit_identical_to_offline(seed, max_frac, pop_every):
    asm = StreamingAssembler(SENSORS, WINDOW)
    got = []
    for i, c in enumerate(chunked(SESSION, seed, max_frac)):
        asm.push(c)
        if i % pop_every == 0:
            got += asm.pop_ready()
    got += asm.pop_ready() + asm.flush()
    assert [g[0] for g in got] == OFFLINE.t_end.tolist()
    for i, (_, inputs, mask) in enumerate(got):
        assert mask.tobytes() == OFFLINE.mask[i].tobytes()
        for name, arr in inputs.items():
            assert arr.dtype == np.float32 and arr.tobytes() == OFFLINE.inputs[name][i].tobytes(), (i, name)


def test_grid_layout_and_masks():
    w = OFFLINE
    # ends on k * hop from the session start; the first window starts at 0
    np.testing.assert_allclose(w.t_end, 1.0 + 0.5 * np.arange(len(w)))
    assert w.inputs["imu"].shape == (len(w), 6, 200) and w.inputs["audio"].shape == (len(w), 4000)
    assert w.inputs["camera"].shape == (len(w), 3, 16, 16) and w.inputs["env"].shape == (len(w), 2, 10)
    assert 0 <= w.inputs["camera"].min() and w.inputs["camera"].max() <= 1
    env = w.mask[:, w.modalities.index("env")]
    starts = w.t_end - 1.0
    missing = np.clip(np.minimum(w.t_end, 3.6) - np.maximum(starts, 2.0), 0, None)  # seconds of outage in each window
    assert not env[missing > 0.15].any() and env[missing == 0].all()
    assert not w.inputs["env"][missing > 0.15].any()  # masked -> zeros
    imu = w.mask[:, w.modalities.index("imu")]
    assert imu.all()  # 10 % dropped over a second still meets min_coverage 0.9
    cam = w.mask[:, w.modalities.index("camera")]
    # the newest frame may be up to stale_after_s (1 s at 5 fps) old; the outages are longer than that
    cam_ok = lambda end: any(0 <= end - f <= 1.0 for f in SESSION.streams["camera"].t)  # noqa: E731
    assert cam.tolist() == [float(cam_ok(e)) for e in w.t_end] and 0 < cam.sum() < len(w)


def test_coverage_below_minimum_masks():
    spec = SensorSpec("x", "timeseries", 100.0, 1)
    t = np.arange(300) / 100.0
    keep = ~((t >= 1.0) & (t < 2.0) & (np.arange(300) % 4 == 0))  # 75 % coverage in [1, 2)
    s = Session("s", {"x": Stream(t[keep], t[keep, None].astype(np.float32))})
    w = window_session(s, [spec], WindowSpec(1.0, 0.5, min_coverage=0.9))
    assert dict(zip(w.t_end.tolist(), w.mask[:, 0].tolist())) == {1.0: 1.0, 1.5: 0.0, 2.0: 0.0, 2.5: 0.0, 3.0: 1.0}
    # present windows hold the newest T samples in time order, channels first
    np.testing.assert_array_equal(w.inputs["x"][0, 0], (np.arange(100) / 100.0).astype(np.float32))


@pytest.mark.parametrize(
    "rule, expected",
    # windows of 1 s ending at 1.0, 1.5, 2.0, 2.5; segments: a on [0, 1.3), b on [1.3, 1.6), nothing after
    # majority at 1.5: a covers 0.8 of [0.5, 1.5) -> a; at 2.0: a 0.3 + b 0.3, neither half -> -1
    [("majority", [0, 0, -1, -1]), ("center", [0, 0, 1, -1])],
)
def test_label_overlap_rule(rule, expected):
    task = TaskSpec("state", labels=["a", "b"])
    s = Session("s", {}, {"state": "a"}, [Segment("state", 0.0, 1.3, "a"), Segment("state", 1.3, 1.6, "b")])
    got = window_labels(s, task, WindowSpec(1.0, 0.5, label_rule=rule), np.array([1.0, 1.5, 2.0, 2.5]))
    assert got.tolist() == expected


def test_session_label_applies_to_every_window():
    assert set(OFFLINE.labels["state"].tolist()) == {SC.labels.index("overheating")}


# ---------------------------------------------------------------- bad times (issue 12, item 3)

A = SensorSpec("a", "timeseries", 100.0, 1)
B = SensorSpec("b", "timeseries", 10.0, 1)
HOP = WindowSpec(1.0, 0.5)


def steady(asm, t0: float, t1: float, sensors=(A, B), piece: float = 0.1) -> list:
    """Push both streams from t0 to t1 in `piece`-second chunks, as a live source would; the windows cut."""
    got = []
    for start in np.arange(t0, t1, piece):
        for s in sensors:
            t = start + np.arange(int(round(piece * s.rate))) / s.rate
            asm.push(SensorChunk(s.name, t, np.ones((len(t), 1), np.float32)))
        got += asm.pop_ready()
    return got


def test_a_sample_stamped_2_31_us_ahead_is_one_discontinuity_not_thousands_of_windows():
    from edge_gmm.data.windowing import MAX_WINDOWS_PER_CALL

    asm = StreamingAssembler([A, B], HOP)
    assert len(steady(asm, 0.0, 5.0)) >= 8
    bogus = 5.0 + 2**31 * 1e-6  # one CRC-valid frame 36 min ahead
    asm.push(SensorChunk("a", bogus + np.arange(10) / 100.0, np.ones((10, 1), np.float32)))
    cut = asm.pop_ready()
    assert len(cut) <= MAX_WINDOWS_PER_CALL and all(end < bogus + 1.0 for end, _, _ in cut)
    # ... then "a" is back on time: a second discontinuity puts the grid back where the data is
    after = steady(asm, 5.1, 10.0)
    assert asm.discontinuities == {"a": 2, "b": 0}
    ends = [end for end, _, _ in after]
    assert len(after) >= 7 and ends[-1] == pytest.approx(9.5, abs=0.6)  # predictions go on, on time
    assert max(ends) < 10.0  # and none stamped 36 minutes ahead
    assert all(mask.all() for end, _, mask in after if end >= 7.0)  # both present again a window or two later
    assert sum(asm.buffered().values()) <= 2 * (100 + 10)  # about a window's worth held, not 36 min of it


def test_a_stream_that_jumps_back_resyncs_instead_of_being_dropped_for_good():
    asm = StreamingAssembler([A], HOP)
    steady(asm, 3000.0, 3004.0, sensors=(A,))
    after = steady(asm, 100.0, 104.0, sensors=(A,))  # the clock went back 48 min (a reset the mapping missed)
    assert asm.discontinuities["a"] == 1 and asm.dropped["a"] == 0
    assert after[0][0] == 3004.0 and after[0][2].all()  # the last window before the jump still comes out ...
    assert len(after) >= 6 and 100.0 < after[1][0] < 102.0 and after[-1][2].all()  # ... then it goes on from 100 s


def test_non_finite_times_are_dropped_and_counted_and_cannot_move_the_grid():
    import threading

    asm = StreamingAssembler([A, B], HOP)
    steady(asm, 0.0, 2.0)
    t = np.array([2.0, np.inf, 2.02, np.nan, 2.04])
    asm.push(SensorChunk("a", t, np.ones((5, 1), np.float32)))
    got = []
    th = threading.Thread(target=lambda: got.append(asm.pop_ready()), daemon=True)  # +inf once made this spin
    th.start()
    th.join(5.0)
    assert not th.is_alive() and len(got[0]) <= 1
    assert asm.invalid == {"a": 2, "b": 0} and asm.now == pytest.approx(2.04)
    assert len(steady(asm, 2.1, 4.0)) >= 3


def test_pop_ready_is_bounded_and_hands_out_the_backlog_on_the_next_calls():
    from edge_gmm.data.windowing import MAX_WINDOWS_PER_CALL

    long = Session("l", {"a": Stream(np.arange(20000) / 100.0, np.ones((20000, 1), np.float32))})
    offline = window_session(long, [A], HOP)
    asm = StreamingAssembler([A], HOP)
    for i in range(0, 20000, 2000):  # 20 s per chunk, so one push readies ~40 windows
        asm.push(SensorChunk("a", long.streams["a"].t[i:i + 2000], long.streams["a"].x[i:i + 2000]))
    got = asm.pop_ready()
    assert len(got) == MAX_WINDOWS_PER_CALL and asm.backlog
    while asm.backlog:
        got += asm.pop_ready()
    got += asm.flush()
    assert [g[0] for g in got] == offline.t_end.tolist() and asm.discontinuities["a"] == 0  # nothing lost
