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
