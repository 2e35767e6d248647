"""Token streaming on the device: per-token encoding at each sensor's rate, snapshots at any prediction rate equal
to whole windows on the common grid, per-token masks, bounded work under bad times. Encoders are a fixed random
linear map of the flattened span, so every sample of a span shows in its token."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_gmm.config import SensorSpec, WindowSpec
from edge_gmm.data.format import SensorChunk, Session, Stream
from edge_gmm.data.windowing import window_session
from edge_gmm.devices.token_streams import MAX_SPANS_PER_CALL
from edge_gmm.devices.tokens import TokenCache, TokenLayout
from edge_gmm.errors import ConfigError

DIM = 8
WINDOW = WindowSpec(length_s=1.0, hop_s=0.5, min_coverage=0.9)
SENSORS = [
    SensorSpec("imu", "imu", 200.0, channels=6),
    SensorSpec("audio", "audio", 16000.0),
    SensorSpec("env", "timeseries", 10.0, channels=2),
    SensorSpec("camera", "camera", 5.0, height=8, width=8, timeout_s=0.5),
]
SPEC = {s.name: s for s in SENSORS}
LAYOUTS = {  # imu: 7 overlapping spans cover the 200-sample window; audio's 19 spans (STFT-like) end 560 samples early
    "imu": TokenLayout("imu", span=50, hop=25, tokens=7),
    "audio": TokenLayout("audio", span=1040, hop=800, tokens=19),
    "env": TokenLayout("env", span=1, hop=1, tokens=10),
    "camera": TokenLayout.from_dict("camera", {"span": 1, "hop": 1, "tokens": 4, "per_call": 4}),
}
DURATION_S = 4.0


class LinearEncoder:
    """One span in model layout -> (per_call, DIM): a fixed random linear map; counts its calls."""

    def __init__(self, shape: tuple[int, ...], per_call: int, seed: int):
        self.shape, self.per_call, self.calls = shape, per_call, 0
        rng = np.random.default_rng(seed)
        self.w = rng.standard_normal((int(np.prod(shape)), per_call * DIM)).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.shape == self.shape and x.dtype == np.float32
        self.calls += 1
        return (np.ascontiguousarray(x).reshape(-1) @ self.w).reshape(self.per_call, DIM)


def span_shape(name: str) -> tuple[int, ...]:
    s, span = SPEC[name], LAYOUTS[name].span
    return {"imu": (s.channels, span), "timeseries": (s.channels, span), "audio": (span,),
            "camera": (3, s.height, s.width)}[s.kind]


def encoders() -> dict[str, LinearEncoder]:
    return {m: LinearEncoder(span_shape(m), LAYOUTS[m].per_call, seed=i) for i, m in enumerate(LAYOUTS)}


def make_session(seed: int = 0, drop: dict[str, tuple[float, float]] | None = None, sensors=SENSORS) -> Session:
    """Regular samples half a period off the grid (no sample sits on a span edge); `drop` removes [a, b) of a stream."""
    rng = np.random.default_rng(seed)
    streams = {}
    for s in sensors:
        n = int(DURATION_S * s.rate)
        t = (np.arange(n) + 0.5) / s.rate
        x = rng.standard_normal((n, *s.sample_shape)).astype(np.float32)
        a, b = (drop or {}).get(s.name, (0.0, 0.0))
        keep = (t < a) | (t >= b)
        streams[s.name] = Stream(t[keep], x[keep])
    return Session("s0", streams)


def chunks(session: Session, seed: int = 1) -> list[SensorChunk]:
    """Each stream in chunks of 10..100 ms of time, delivered in the order their last samples arrive."""
    rng = np.random.default_rng(seed)
    out = []
    for name, st in session.streams.items():
        t0 = 0.0
        while t0 < DURATION_S:
            t1 = t0 + rng.uniform(0.01, 0.1)
            sel = (st.t >= t0) & (st.t < t1)
            if sel.any():
                out.append(SensorChunk(name, st.t[sel], st.x[sel]))
            t0 = t1
    return sorted(out, key=lambda c: float(c.t[-1]))


def new_cache(rate: float = 10.0, encs=None, sensors=SENSORS) -> TokenCache:
    encs = encs or encoders()
    return TokenCache(sensors, WINDOW, {s.name: LAYOUTS[s.name] for s in sensors}, encs, DIM, rate)


def stream_through(cache: TokenCache, pieces: list[SensorChunk], watch=None) -> list:
    snaps = []
    for c in pieces:
        cache.push(c)
        snaps += cache.pop_ready()
        if watch:
            watch(cache)
    return snaps


def window_tokens(name: str, x: np.ndarray, enc) -> np.ndarray:
    """The tokens of one whole window (model layout) the way the fusion graph sees them: (N, D)."""
    lay = LAYOUTS[name]
    if SPEC[name].kind == "camera":
        return enc(x)
    return np.concatenate([enc(np.ascontiguousarray(x[..., i * lay.hop: i * lay.hop + lay.span]))
                           for i in range(lay.slots)])


def on_window_grid(t: float) -> bool:
    return abs(t / WINDOW.hop_s - round(t / WINDOW.hop_s)) < 1e-9


def by_time(snaps) -> dict[float, object]:
    return {round(s.t, 6): s for s in snaps}


@pytest.fixture(scope="module")
def intact():
    session = make_session()
    encs = encoders()
    cache = new_cache(10.0, encs)
    return session, cache, encs, stream_through(cache, chunks(session))


def test_snapshots_on_the_common_grid_equal_whole_windows(intact):
    session, cache, _, snaps = intact
    offline = window_session(session, SENSORS, WINDOW)
    ref = encoders()  # same weights, its own call counts
    compared = 0
    for snap in snaps:
        if not on_window_grid(snap.t):
            continue
        w = int(np.flatnonzero(np.isclose(offline.t_end, snap.t))[0])
        assert offline.mask[w].tolist() == [1.0] * len(SENSORS)
        for name in cache.modalities:
            want = window_tokens(name, offline.inputs[name][w], ref[name])
            np.testing.assert_allclose(snap.tokens[name], want, rtol=1e-6, atol=1e-6)
            assert snap.tokens[name].dtype == np.float32 and snap.tokens[name].shape == (LAYOUTS[name].tokens, DIM)
            assert snap.mask[name].tolist() == [1.0] * LAYOUTS[name].tokens
        compared += 1
    assert compared >= 5  # windows ending at 1.0 .. 3.5 s (the last ones wait for data past the end)


def test_flush_cuts_the_last_predictions_the_data_completes_and_no_more():
    from edge_gmm.data.windowing import StreamingAssembler

    session = make_session()
    cache = new_cache(10.0)
    snaps, rest = stream_through(cache, chunks(session)), []
    while True:
        rest += cache.flush()
        if not cache.backlog:
            break
    calls = dict(cache.counts()["encoder_calls"])
    assert rest and rest[0].t == pytest.approx(snaps[-1].t + 0.1)
    # as far as the assembler's flush goes at the same rate (the newest sample + one period: the camera's 4.1 s)
    assembler = StreamingAssembler(SENSORS, WindowSpec(length_s=WINDOW.length_s, hop_s=0.1, min_coverage=0.9))
    ends = []
    for c in chunks(session):
        assembler.push(c)
        ends += [t for t, _, _ in assembler.pop_ready()]
    ends += [t for t, _, _ in assembler.flush()]
    np.testing.assert_allclose([s.t for s in snaps + rest], ends, atol=1e-9)
    # the window ending with the data (4.0 s) is every token of the last whole window
    offline = window_session(session, SENSORS, WINDOW)
    last = by_time(rest)[round(float(offline.t_end[-1]), 6)]
    ref = encoders()
    for name in cache.modalities:
        np.testing.assert_allclose(last.tokens[name], window_tokens(name, offline.inputs[name][-1], ref[name]),
                                   rtol=1e-6, atol=1e-6)
        assert last.mask[name].all()
    assert cache.flush() == [] and cache.counts()["encoder_calls"] == calls  # a second flush: nothing left


def test_off_the_common_grid_tokens_shift_back_by_under_one_hop(intact):
    session, _, _, snaps = intact
    ref = encoders()["imu"]
    imu, lay = session.streams["imu"], LAYOUTS["imu"]
    hop_s = lay.hop / SPEC["imu"].rate
    off_grid = 0
    for snap in snaps:
        start = snap.t - WINDOW.length_s
        j0 = math.floor(start / hop_s + 1e-6)  # the window start rounded down onto the imu token grid
        assert 0 <= start - j0 * hop_s < hop_s
        want = np.concatenate([ref(np.ascontiguousarray(imu.x[j * lay.hop: j * lay.hop + lay.span].T))
                               for j in range(j0, j0 + lay.slots)])
        np.testing.assert_allclose(snap.tokens["imu"], want, rtol=1e-6, atol=1e-6)
        off_grid += not on_window_grid(snap.t)
    assert off_grid >= 20


def test_predictions_come_at_the_rate_asked_and_encoding_does_not_depend_on_it(intact):
    session, cache10, encs10, snaps10 = intact
    encs20 = encoders()
    cache20 = new_cache(20.0, encs20)
    snaps20 = stream_through(cache20, chunks(session))
    for snaps, rate in ((snaps10, 10.0), (snaps20, 20.0)):
        np.testing.assert_allclose(np.diff([s.t for s in snaps]), 1.0 / rate, atol=1e-9)
        assert snaps[0].t == pytest.approx(WINDOW.length_s) and snaps[-1].t > DURATION_S - 0.5
    assert {m: e.calls for m, e in encs20.items()} == {m: e.calls for m, e in encs10.items()}
    # one call per token of data, not per token per prediction (whole windows at 20 Hz: 20 * 7 imu calls a second)
    for m, lay in LAYOUTS.items():
        per_s = SPEC[m].rate / lay.hop
        assert encs10[m].calls <= DURATION_S * per_s + 1
        assert cache10.counts()["encoder_calls"][m] == encs10[m].calls
        assert cache10.counts()["tokens_encoded"][m] == encs10[m].calls * lay.per_call
    assert cache10.counts()["spans_masked"] == {m: 0 for m in LAYOUTS}
    # off the common grid the same tokens reappear, shifted by under one token hop
    common = by_time(snaps20)
    for s in snaps10:
        np.testing.assert_array_equal(common[round(s.t, 6)].tokens["env"], s.tokens["env"])


def test_a_dropout_masks_only_the_tokens_whose_spans_touch_it(intact):
    session, _, encs, snaps = intact
    gap = (2.0, 2.3)
    hop_s = LAYOUTS["imu"].hop / SPEC["imu"].rate
    span_s = LAYOUTS["imu"].span / SPEC["imu"].rate
    touching = {j for j in range(64) if j * hop_s < gap[1] and j * hop_s + span_s > gap[0]}
    assert touching == {15, 16, 17, 18}
    encs_drop = encoders()
    cache = new_cache(10.0, encs_drop)
    dropped = by_time(stream_through(cache, chunks(make_session(drop={"imu": gap}))))
    assert encs_drop["imu"].calls == encs["imu"].calls - len(touching)  # masked spans cost no encoder call
    assert cache.counts()["spans_masked"]["imu"] == len(touching)
    seen = set()
    for full in snaps:
        got = dropped[round(full.t, 6)]
        j0 = math.floor((full.t - WINDOW.length_s) / hop_s + 1e-6)
        masked = [j0 + i in touching for i in range(LAYOUTS["imu"].slots)]
        assert got.mask["imu"].tolist() == [0.0 if m else 1.0 for m in masked]
        keep = ~np.asarray(masked)
        np.testing.assert_array_equal(got.tokens["imu"][keep], full.tokens["imu"][keep])
        assert not got.tokens["imu"][~keep].any()
        for name in ("audio", "env", "camera"):
            np.testing.assert_array_equal(got.tokens[name], full.tokens[name])
            np.testing.assert_array_equal(got.mask[name], full.mask[name])
        seen |= {j0 + i for i, m in enumerate(masked) if m}
    assert seen == touching


def test_camera_tokens_are_valid_within_stale_after_s_then_masked():
    sensors = [SPEC["imu"], SPEC["camera"]]
    session = make_session(sensors=sensors)
    cam = session.streams["camera"]
    keep = cam.t < 2.0  # the last frame is at 1.9 s
    session.streams["camera"] = Stream(cam.t[keep], cam.x[keep])
    encs = encoders()
    snaps = stream_through(new_cache(10.0, encs, sensors), chunks(session))
    last_frame = window_tokens("camera", np.transpose(cam.x[keep][-1], (2, 0, 1)), encoders()["camera"])
    for s in snaps:
        if 1.9 < s.t <= 1.9 + 0.4:  # at most stale_after_s (0.5 s) old: the newest frame before t
            assert s.mask["camera"].tolist() == [1.0] * 4
            np.testing.assert_allclose(s.tokens["camera"], last_frame, rtol=1e-6, atol=1e-6)
        elif s.t >= 1.9 + 0.6:
            assert s.mask["camera"].tolist() == [0.0] * 4 and not s.tokens["camera"].any()
            assert s.mask["imu"].tolist() == [1.0] * 7  # the rest goes on
    assert snaps[-1].t > DURATION_S - 0.7  # a stale camera delays predictions by its stale_after_s, never stops them
    assert encs["camera"].calls == int(keep.sum())  # each frame encoded once, whatever the prediction rate


def test_camera_frames_faster_than_the_sensor_rate_are_not_all_encoded():
    sensors = [SPEC["camera"]]
    encs = encoders()
    cache = new_cache(10.0, encs, sensors)
    t = np.arange(20) / 25.0  # 25 fps into a 5 fps camera: frames under half a period after the last encoded are skipped
    cache.push(SensorChunk("camera", t, np.zeros((20, 8, 8, 3), np.float32)))
    cache.pop_ready()
    assert encs["camera"].calls == 7 and cache.counts()["frames_over_rate"]["camera"] == 13  # every third frame


def test_bad_times_are_counted_and_stall_nothing():
    session = make_session(seed=3)
    pieces = chunks(session, seed=4)
    bogus_at = next(i for i, c in enumerate(pieces) if c.t[0] > 2.0)
    imu_old = next(c for c in pieces if c.modality == "imu" and c.t[0] > 1.0)
    audio = next(i for i, c in enumerate(pieces) if c.modality == "audio" and c.t[0] > 1.2)
    nan_t = pieces[audio].t.copy()
    nan_t[::100] = np.nan
    pieces[audio] = SensorChunk("audio", nan_t, pieces[audio].x)
    late = SensorChunk("imu", imu_old.t.copy(), imu_old.x)  # delivered again, long after: out of order
    jump = SensorChunk("imu", pieces[bogus_at].t[:1] * 0 + 2.1 + np.arange(5) / 200 + 2**31 / 1e6,
                       np.zeros((5, 6), np.float32))  # a 2^31 us clock wrap on one chunk
    pieces[bogus_at + 10: bogus_at + 10] = [late, jump]
    cache = new_cache(10.0)
    peak = {"buffered": {m: 0 for m in LAYOUTS}, "cached": {m: 0 for m in LAYOUTS}}
    backlogs = []

    def watch(c: TokenCache):
        for key, now in (("buffered", c.buffered()), ("cached", c.cached())):
            peak[key] = {m: max(peak[key][m], now[m]) for m in now}
        backlogs.append(c.backlog)

    snaps = stream_through(cache, pieces, watch)
    counts = cache.counts()
    assert counts["invalid_times"]["audio"] == int(np.isnan(nan_t).sum())
    assert counts["out_of_order"]["imu"] == len(late)
    assert counts["discontinuities"]["imu"] == 2  # there and back
    assert not any(backlogs)  # the 36 minutes the clock jumped over cost no burst of span cuts
    ts = [s.t for s in snaps]
    assert all(b > a for a, b in zip(ts, ts[1:])) and ts[-1] > DURATION_S - 0.5  # no stall
    assert not any(DURATION_S < t < 2000 for t in ts)
    for s in snaps:
        if s.t > 2.1 + 1.5:  # a window after the jump: everything valid again
            assert all(m.all() for m in s.mask.values()), s.t
    for m, lay in LAYOUTS.items():  # about one span plus a chunk of raw samples; about a window of tokens
        assert peak["buffered"][m] <= WINDOW.samples(SPEC[m]) + lay.span, (m, peak)
        assert peak["cached"][m] <= cache.streams[m].capacity, (m, peak)


def test_a_clock_jump_pushed_before_any_pop_ready_keeps_the_predictions_before_it():
    """A replay pushes many chunks between two pop_ready calls: the data before an hour's jump still yields its
    predictions (cut when the jump arrives, as the assembler cuts its windows), then the grid follows the jump."""
    session = make_session()
    cut = 2.55
    pieces = []
    for c in chunks(session):
        t = np.where(c.t >= cut, c.t + 3600.0, c.t)
        pieces.append(SensorChunk(c.modality, t, c.x))
    pieces.sort(key=lambda c: float(c.t[-1]))
    cache = new_cache(10.0)
    for c in pieces:  # all of it, then one pop_ready, as a drained queue
        cache.push(c)
    snaps = []
    while True:
        snaps += cache.pop_ready()
        if not cache.backlog:
            break
    before = [s.t for s in snaps if s.t < 100]
    np.testing.assert_allclose(before, np.arange(10, 26) / 10, atol=1e-9)  # 1.0 .. 2.5 s: none lost
    assert all(s.mask[m].all() for s in snaps if s.t < 100 for m in cache.modalities)  # with all their tokens
    assert sum(cache.counts()["discontinuities"].values()) >= 1
    assert [s.t for s in snaps if s.t > 100]  # and predictions go on after the jump


def test_pop_ready_does_bounded_work_and_says_when_more_is_ready():
    sensors = [SPEC["audio"]]
    session = make_session(sensors=sensors)
    encs = encoders()
    cache = new_cache(20.0, encs, sensors)
    cache.push(SensorChunk("audio", session.streams["audio"].t, session.streams["audio"].x))  # 4 s at once
    calls, snaps = [], []
    for _ in range(10):
        snaps += cache.pop_ready()
        calls.append(encs["audio"].calls)
        if not cache.backlog:
            break
    assert not cache.backlog and len(calls) >= 2  # the work spread over calls, each bounded:
    assert max(np.diff([0] + calls)) <= min(MAX_SPANS_PER_CALL, cache.streams["audio"].capacity)
    assert encs["audio"].calls == (64000 - 1040) // 800 + 1
    assert len(snaps) == 60  # 1.0 .. 3.95 s at 20 Hz: the one at 4.0 waits for data at or past it
    for s in snaps:  # a stream far ahead of the prediction clock waits for it instead of dropping tokens
        assert s.mask["audio"].all(), s.t


def test_layout_validation():
    assert TokenLayout.from_dict("imu", {"span": 50, "hop": 25, "tokens": 7}).slots == 7
    for bad in ({"span": 50, "hop": 25}, {"span": 50, "hop": 25, "tokens": 7, "stride": 2},
                {"span": 0, "hop": 25, "tokens": 7}, {"span": 50, "hop": True, "tokens": 7},
                {"span": 50, "hop": 25, "tokens": 7, "per_call": 2}, {"span": 5.5, "hop": 1, "tokens": 1}, [50]):
        with pytest.raises(ConfigError):
            TokenLayout.from_dict("imu", bad)
    with pytest.raises(ConfigError, match="reach 225 samples"):
        TokenLayout("imu", span=50, hop=25, tokens=8).check_fits(SPEC["imu"], WINDOW)
    with pytest.raises(ConfigError, match="one frame"):
        TokenLayout("camera", span=1, hop=1, tokens=8, per_call=4).check_fits(SPEC["camera"], WINDOW)
    with pytest.raises(ConfigError, match="no token layout"):
        TokenCache(SENSORS, WINDOW, {"imu": LAYOUTS["imu"]}, encoders(), DIM, 10.0)
