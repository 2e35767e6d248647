"""Each importer on tiny committed fixtures (tests/data/fixtures, made by make_fixtures.py), plus a malformed
file each: DataError naming file and line/offset, and nothing written."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edge_gmm.data.format import Dataset
from edge_gmm.data.importers import ImportOptions, cbor, import_dataset
from edge_gmm.data.windowing import make_windows
from edge_gmm.errors import DataError

FX = Path(__file__).parent / "fixtures"
KEY = "fixture-key"
_AEON = importlib.util.find_spec("aeon")  # located without importing aeon (slow)
AEON_BM = Path(_AEON.submodule_search_locations[0]) / "datasets" / "data" / "BasicMotions" if _AEON else Path("/nonexistent")


def imp(tmp_path, fmt, src, test=None, **opts):
    return import_dataset(fmt, FX / src, tmp_path / "ds", test=FX / test if test else None, opts=ImportOptions(**opts))


def test_ts_unequal_pad_keeps_whole_series_right_aligned(tmp_path):
    ds = imp(tmp_path, "ts", "ts/Uneq_TRAIN.ts", "ts/Uneq_TEST.ts")
    assert len(ds.session_ids("test")) == 2 and ds.tasks[0].labels == ["up", "down"]
    assert ds.window.length_s == 8.0 and ds.window.hop_s == 8.0  # one window per series of up to 8 samples
    s0 = ds.load_session("train-00000")  # 5 samples (lengths cycle 5, 6, 7, 8)
    np.testing.assert_array_equal(s0.streams["series"].t, [3, 4, 5, 6, 7])
    s3 = ds.load_session("train-00003")  # 8 samples, the third is '?' -> dropped
    assert len(s3.streams["series"]) == 7 and 2.0 not in s3.streams["series"].t
    w = make_windows(ds, None)
    assert w.inputs["series"].shape == (8, 1, 8) and w.mask.all()
    row = w.inputs["series"][w.session.index("train-00000"), 0]
    np.testing.assert_array_equal(row[:4], np.repeat(row[3], 4))  # padded in front with the first value
    np.testing.assert_array_equal(row[3:], s0.streams["series"].x[:, 0])


def test_ts_unequal_truncate(tmp_path):
    ds = imp(tmp_path, "ts", "ts/Uneq_TRAIN.ts", unequal="truncate")
    assert ds.meta["unequal"] == "truncate" and ds.meta["samples_dropped"] == (0 + 1 + 2 + 3 + 0 + 1)
    assert make_windows(ds, None).inputs["series"].shape == (6, 1, 5)


def test_ts_multivariate_and_rate(tmp_path):
    ds = imp(tmp_path, "ts", "ts/Multi_TRAIN.ts", rate=50.0)
    assert ds.sensors[0].channels == 3 and ds.sensors[0].rate == 50.0
    assert make_windows(ds, None).inputs["series"].shape == (6, 3, 6)


def test_ts_timestamped_dates(tmp_path):
    src = tmp_path / "stamped.ts"
    src.write_text("@problemName S\n@timeStamps true\n@univariate true\n@classLabel true a b\n@data\n"
                   "(2007-01-01 00:00:00,1.0),(2007-01-01 00:01:00,2.0),(2007-01-01 00:02:00,3.0):a\n"
                   "(2007-01-01 05:00:00,4.0),(2007-01-01 05:01:00,5.0),(2007-01-01 05:02:00,6.0):b\n")
    ds = import_dataset("ts", src, tmp_path / "ds")
    assert ds.sensors[0].rate == pytest.approx(1 / 60)
    np.testing.assert_array_equal(ds.load_session("train-00001").streams["series"].t, [0, 60, 120])


@pytest.mark.parametrize("src, where", [("ts/bad_value.ts", r"bad_value.ts:11: dimension 0, value 5: '1.2.3'"), ("ts/truncated.ts", "no @data section")])
def test_ts_malformed(tmp_path, src, where):
    with pytest.raises(DataError, match=where):
        imp(tmp_path, "ts", src)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not AEON_BM.is_dir(), reason="aeon's BasicMotions not installed")
def test_basicmotions_from_aeon(tmp_path):
    src = AEON_BM / "BasicMotions_TRAIN.ts"
    ds = import_dataset("ts", src, tmp_path / "bm", test=AEON_BM / "BasicMotions_TEST.ts", opts=ImportOptions(rate=10.0))
    assert sorted(ds.tasks[0].labels) == ["Badminton", "Running", "Standing", "Walking"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 32, "val": 8, "test": 40}
    first = next(ln for ln in src.read_text().splitlines() if ln and ln[0] not in "#@")  # case 0
    dims = [np.array(d.split(","), np.float32) for d in first.split(":")[:-1]]
    w = make_windows(ds, None)
    assert w.inputs["series"].shape == (80, 6, 100) and w.mask.all()
    np.testing.assert_array_equal(w.inputs["series"][w.session.index("train-00000")], np.stack(dims))
    assert ds.tasks[0].labels[w.labels["class"][w.session.index("train-00000")]] == first.rsplit(":", 1)[1]


def test_wav_folder(tmp_path):
    ds = imp(tmp_path, "wav-folder", "wav")
    assert ds.sensors[0].kind == "audio" and ds.sensors[0].rate == 4000 and ds.tasks[0].labels == ["hiss", "hum"]
    w = make_windows(ds, None)
    assert w.inputs["audio"].shape == (6, 600) and w.mask.all()
    hum = w.inputs["audio"][w.labels["class"] == 1]
    assert np.abs(hum).max() == pytest.approx(0.5, abs=0.01)


def test_wav_truncated(tmp_path):
    with pytest.raises(DataError, match=r"cut.wav: offset 36: data chunk says 800 bytes.*truncated"):
        imp(tmp_path, "wav-folder", "wav_bad")
    assert list(tmp_path.iterdir()) == []


def test_image_folder_resizes_to_rgb_unit_range(tmp_path):
    ds = imp(tmp_path, "image-folder", "img", image_size="4x4")
    w = make_windows(ds, None)
    assert w.inputs["camera"].shape == (6, 3, 4, 4) and 0 <= w.inputs["camera"].min() and w.inputs["camera"].max() <= 1
    red = w.inputs["camera"][w.labels["class"] == ds.tasks[0].labels.index("red")]
    assert (red[:, 0].mean() > 0.7) and (red[:, 2].mean() < 0.3)


def test_image_broken(tmp_path):
    with pytest.raises(DataError, match="broken.png: cannot decode image"):
        imp(tmp_path, "image-folder", "img_bad")
    assert list(tmp_path.iterdir()) == []


def test_csv_label_column_becomes_segments(tmp_path):
    ds = imp(tmp_path, "csv", "csv/session1.csv", label_column="activity")
    assert ds.sensors[0].rate == pytest.approx(20.0, rel=1e-4) and ds.sensors[0].channels == 2
    s = ds.load_session("train-00000")
    assert s.meta["t0"] == pytest.approx(1700000000.0)
    assert [(seg.label, round(seg.start, 2), round(seg.end, 2)) for seg in s.segments] == [("rest", 0.0, 1.5), ("walk", 1.5, 3.0)]
    w = make_windows(ds, None)  # windows end 1.0 .. 3.0; majority rule, the tie at 2.0 goes to the lower label index
    assert [ds.tasks[0].labels[v] for v in w.labels["activity"]] == ["rest", "rest", "rest", "walk", "walk"]


def test_csv_bad_cell(tmp_path):
    with pytest.raises(DataError, match=r"csv_bad.csv:18: column 'ax': 'abc' is not a number"):
        imp(tmp_path, "csv", "csv_bad.csv", label_column="activity")
    assert list(tmp_path.iterdir()) == []


def test_edge_impulse_json_and_cbor_verified(tmp_path):
    ds = imp(tmp_path, "edge-impulse", "ei", hmac_key=KEY)
    assert ds.sensors[0].kind == "imu" and ds.sensors[0].rate == 50.0 and ds.tasks[0].labels == ["idle", "wave"]
    assert ds.meta["verified"] is True
    w = make_windows(ds, None)
    files = {ds.load_session(s).meta["file"]: i for i, s in enumerate(w.session)}
    assert set(files) == {"idle.s0.json", "idle.s1.cbor", "wave.s0.json", "wave.s1.cbor"}
    assert w.inputs["imu"][files["wave.s1.cbor"]].std() > 5 * w.inputs["imu"][files["idle.s1.cbor"]].std()
    raw = json.loads((FX / "ei" / "idle.s0.json").read_text())["payload"]["values"]
    np.testing.assert_allclose(w.inputs["imu"][files["idle.s0.json"]], np.array(raw[:50], np.float32).T)


@pytest.mark.parametrize(
    "src, key, message",
    [("ei_tampered", KEY, "wave.t.json: HMAC-SHA256 signature does not match"),
     ("ei", "wrong-key", "signature does not match"),
     ("ei_bad", "", r"wave.cut.cbor: offset \d+: needs \d+ more bytes.*truncated")],
)
def test_edge_impulse_rejects(tmp_path, src, key, message):
    with pytest.raises(DataError, match=message):
        imp(tmp_path, "edge-impulse", src, hmac_key=key)
    assert list(tmp_path.iterdir()) == []


def test_edge_impulse_unverified_without_key(tmp_path):
    assert imp(tmp_path, "edge-impulse", "ei_tampered").meta["verified"] is False


def test_cbor_decoder_rfc_examples():
    assert cbor.loads(bytes.fromhex("f93c00")) == 1.0  # half float
    assert cbor.loads(bytes.fromhex("9f018202039f0405ffff")) == [1, [2, 3], [4, 5]]  # indefinite arrays
    assert cbor.loads(bytes.fromhex("bf6346756ef563416d7421ff")) == {"Fun": True, "Amt": -2}
    assert cbor.loads(bytes.fromhex("c074323031332d30332d32315432303a30343a30305a")) == "2013-03-21T20:04:00Z"  # tag 0
    doc = {"a": [1, -300, 2.5, "x", b"\x00", None, True], "b": {"c": 70000}}
    assert cbor.loads(cbor.dumps(doc)) == doc
    with pytest.raises(DataError, match="offset 1: needs 1 more bytes"):
        cbor.loads(bytes.fromhex("18"))


def test_existing_output_is_kept(tmp_path):
    imp(tmp_path, "wav-folder", "wav")
    with pytest.raises(DataError, match="already exists"):
        imp(tmp_path, "image-folder", "img")
    assert Dataset.open(tmp_path / "ds").sensors[0].kind == "audio"
