"""The dataset format: round trip, validation naming the problem, atomic writes."""

import json

import numpy as np
import pytest

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Dataset, DatasetWriter, Segment, Session, Stream
from edge_gmm.errors import DataError

SENSORS = [SensorSpec("acc", "imu", 50.0, 3), SensorSpec("cam", "camera", 2.0, height=4, width=5)]
TASKS = [TaskSpec("state", labels=["a", "b"])]


def session(sid="s1", n=100, label="a"):
    t = np.arange(n) / 50.0
    return Session(
        sid,
        {"acc": Stream(t, np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)),
         "cam": Stream(np.arange(4) / 2.0, np.full((4, 4, 5, 3), 0.5, np.float32))},
        {"state": label},
        [Segment("state", 0.5, 1.0, "b")],
        {"note": "x"},
    )


def write(path, *sessions, **kw):
    with DatasetWriter(path, name="tiny", sensors=SENSORS, tasks=TASKS, window=WindowSpec(1.0, 0.25), **kw) as w:
        for s, split in sessions:
            w.add(s, split)


def test_round_trip_keeps_streams_labels_segments_and_window(tmp_path):
    s = session()
    write(tmp_path / "ds", (s, "train"), (session("s2", label="b"), "test"))
    ds = Dataset.open(tmp_path / "ds")
    assert [x.name for x in ds.sensors] == ["acc", "cam"] and ds.tasks[0].labels == ["a", "b"]
    assert ds.splits == {"train": ["s1"], "test": ["s2"]} and ds.session_ids("test") == ["s2"]
    assert ds.window == WindowSpec(1.0, 0.25)
    back = ds.load_session("s1")
    assert back.streams["acc"].t.dtype == np.float64 and back.streams["acc"].x.dtype == np.float32
    np.testing.assert_array_equal(back.streams["acc"].x, s.streams["acc"].x)
    assert back.streams["cam"].x.shape == (4, 4, 5, 3)
    assert back.labels == {"state": "a"} and back.segments == [Segment("state", 0.5, 1.0, "b")] and back.meta == {"note": "x"}
    # readable with numpy + stdlib alone, as the device does
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["sessions"]["s1"]["streams"]["acc"]["samples"] == 100
    assert np.load(tmp_path / "ds" / "sessions" / "s1" / "acc.t.npy").shape == (100,)


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds", name="tiny", sensors=SENSORS, tasks=TASKS) as w:
            w.add(session(), "train")
            raise RuntimeError("power cut")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="not a dataset|no such"):
        Dataset.open(tmp_path / "ds")


def test_failed_overwrite_keeps_old_dataset(tmp_path):
    write(tmp_path / "ds", (session(), "train"))
    with pytest.raises(DataError, match="already exists"):
        write(tmp_path / "ds", (session(), "train"))
    with pytest.raises(DataError, match="backwards"):
        bad = session("s9")
        bad.streams["acc"].t[10] = 0.0
        write(tmp_path / "ds", (bad, "train"), overwrite=True)
    assert Dataset.open(tmp_path / "ds").session_ids() == ["s1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    write(tmp_path / "ds", (session("s7"), "val"), overwrite=True)
    assert Dataset.open(tmp_path / "ds").session_ids() == ["s7"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.streams.__setitem__("acc", Stream(s.streams["acc"].t, np.zeros((100, 2), np.float32))), r"acc: expected t\[N\] and x\[N, 3\]"),
        (lambda s: s.streams.__setitem__("mic", s.streams["acc"]), "modality 'mic' is not among"),
        (lambda s: s.labels.__setitem__("state", "zebra"), "label 'zebra' is not one of"),
        (lambda s: s.streams["acc"].x.__setitem__((5, 0), np.nan), "non-finite value in sample 5"),
        (lambda s: setattr(s, "id", "../escape"), "session id"),
    ],
)
def test_invalid_session_is_named(tmp_path, mutate, message):
    s = session()
    mutate(s)
    with pytest.raises(DataError, match=message):
        write(tmp_path / "ds", (s, "train"))
    assert not (tmp_path / "ds").exists()


def test_open_rejects_foreign_manifest(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not an edge-gmm dataset"):
        Dataset.open(tmp_path / "x")


# ---------------------------------------------------------------- the reader refuses damaged files, naming them


def damaged(tmp_path, fix):
    """A valid dataset, then `fix(session_dir, manifest)` edits it on disk as a hand-made or damaged one would be."""
    write(tmp_path / "ds", (session(), "train"))
    d = tmp_path / "ds" / "sessions" / "s1"
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    fix(d, manifest)
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    return Dataset.open(tmp_path / "ds")


def test_fewer_rows_than_timestamps_names_the_file(tmp_path):
    ds = damaged(tmp_path, lambda d, m: np.save(d / "acc.x.npy", np.zeros((60, 3), np.float32)))
    with pytest.raises(DataError, match=r"acc.x.npy: 60 samples for 100 timestamps in acc.t.npy"):
        ds.load_session("s1")


@pytest.mark.parametrize("bad, message", [(np.inf, "non-finite timestamp inf at sample 7"),
                                          (np.nan, "non-finite timestamp nan at sample 7"),
                                          (-1.0, "timestamps go backwards at sample 7")])
def test_non_finite_or_unsorted_timestamps_are_refused(tmp_path, bad, message):
    def fix(d, m):
        t = np.arange(100) / 50.0
        t[7] = bad
        np.save(d / "acc.t.npy", t)

    with pytest.raises(DataError, match=rf"acc.t.npy: {message}"):
        damaged(tmp_path, fix).load_session("s1")


@pytest.mark.parametrize("rate", ["NaN", "Infinity", 1e-6, 1e12])
def test_non_finite_or_absurd_rates_are_refused(tmp_path, rate):
    with pytest.raises(DataError, match=r"manifest.json: (sensor 'acc': rate must be within|key 'sensors.rate' must be a finite)"):
        damaged(tmp_path, lambda d, m: m["sensors"][0].__setitem__("rate", float(rate)))


def test_a_shape_other_than_the_manifests_names_the_file(tmp_path):
    ds = damaged(tmp_path, lambda d, m: m["sensors"][1].update(height=100_000, width=100_000))
    with pytest.raises(DataError, match=r"cam.x.npy: samples of 'cam' must be float\[N, 100000, 100000, 3\]"):
        ds.load_session("s1")


def test_an_array_header_claiming_more_than_the_file_holds_is_not_allocated(tmp_path):
    def fix(d, m):  # a header of 10^12 timestamps (8 TB) in a file of a few hundred bytes
        raw = (d / "acc.t.npy").read_bytes()
        forged = raw.replace(b"(100,), }" + b" " * 10, b"(1000000000000,), }")  # same header length
        assert len(forged) == len(raw) and forged != raw
        (d / "acc.t.npy").write_bytes(forged)

    with pytest.raises(DataError, match=r"acc.t.npy: cannot read array: .*greater than file size"):
        damaged(tmp_path, fix).load_session("s1")
