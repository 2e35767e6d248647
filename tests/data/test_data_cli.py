"""`edge-gmm dataset ...` as a user runs it: JSON output, exit 2 with one line on bad input, PNG written."""

import json
from pathlib import Path

import pytest

from edge_gmm.data import avdigits
from edge_gmm.data.format import Dataset
from edge_gmm.errors import MissingDependencyError

FX = Path(__file__).parent / "fixtures"


def test_synth_then_inspect(cli, tmp_path):
    out = tmp_path / "mh"
    code, stdout, _ = cli("dataset", "synth", "--sessions-per-class", "1", "--session-seconds", "3", "--camera-size", "16", "--out", out, "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["sessions"] == {"train": 5} and 20 <= summary["windows"]["train"] <= 25  # 4-5 per 3 s session
    assert {m["name"] for m in summary["sensors"]} == {"imu", "audio", "camera", "env"}
    code, _, err = cli("dataset", "synth", "--sessions-per-class", "1", "--out", out)
    assert code == 2 and "already exists" in err and "--force" in err and "Traceback" not in err
    png = tmp_path / "plot.png"
    code, stdout, _ = cli("dataset", "inspect", out, "--out", png, "--session", "overheating-000")
    assert code == 0 and "coverage" in stdout and "task state" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_import_each_format(cli, tmp_path):
    runs = [
        ("ts", FX / "ts" / "Uneq_TRAIN.ts", "--test", FX / "ts" / "Uneq_TEST.ts"),
        ("wav-folder", FX / "wav"),
        ("image-folder", FX / "img", "--image-size", "8x8"),
        ("csv", FX / "csv" / "session1.csv", "--label-column", "activity"),
        ("edge-impulse", FX / "ei", "--hmac-key", "fixture-key"),
    ]
    for fmt, src, *extra in runs:
        out = tmp_path / fmt
        code, stdout, err = cli("dataset", "import", "--format", fmt, src, *extra, "--out", out, "--json")
        assert code == 0, (fmt, err)
        assert sum(json.loads(stdout)["windows"].values()) > 0
        assert Dataset.open(out).meta["format"] == fmt


def test_import_malformed_exits_2_naming_the_line(cli, tmp_path):
    code, _, err = cli("dataset", "import", "--format", "csv", FX / "csv_bad.csv", "--label-column", "activity", "--out", tmp_path / "x")
    assert code == 2 and "csv_bad.csv:18" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_inspect_missing_dataset(cli, tmp_path):
    code, _, err = cli("dataset", "inspect", tmp_path / "nothing")
    assert code == 2 and "no such dataset" in err


def test_av_digits_tiny(tmp_path):
    ds = avdigits.build_av_digits(tmp_path / "av", per_digit=1, voices=2, speeds=(150,), seed=1)
    assert len(ds.session_ids()) == 10 and [s.name for s in ds.sensors] == ["audio", "camera"]
    s = ds.load_session("d7-0000")
    assert s.labels == {"digit": "7"} and s.streams["audio"].x.shape == (16000,) and s.streams["camera"].x.shape == (1, 16, 16, 3)
    assert s.meta["voice"] in avdigits.VOICES[:1]  # train pairs never use the held-out voice


def test_av_digits_without_espeak(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither espeak-ng nor sox found
    with pytest.raises(MissingDependencyError, match="espeak-ng and sox"):
        avdigits.build_av_digits(tmp_path / "av", per_digit=1)
    assert not (tmp_path / "av").exists()


def _tiny_dataset(path, acc_t):
    """A dataset with an accelerometer and a camera; its one session recorded only the accelerometer."""
    import numpy as np

    from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
    from edge_gmm.data.format import DatasetWriter, Session, Stream

    sensors = [SensorSpec("acc", "imu", 50.0, 3), SensorSpec("cam", "camera", 2.0, height=4, width=5)]
    with DatasetWriter(path, name="tiny", sensors=sensors, tasks=[TaskSpec("state", labels=["a", "b"])],
                       window=WindowSpec(1.0, 0.25)) as w:
        w.add(Session("s1", {"acc": Stream(acc_t, np.zeros((len(acc_t), 3), np.float32))}, {"state": "a"}), "train")
    return path


@pytest.mark.parametrize("edit, what", [
    (lambda m, t: m["sensors"][1].update(height=100_000, width=100_000), "'cam', camera of sample shape [100000, 100000, 3]"),
    (lambda m, t: t.__setitem__(-1, 1e12), "'acc', imu of sample shape [3] at 50 Hz"),  # one stamp 31,700 years on
])
def test_inspect_refuses_windows_that_cannot_fit_before_allocating_them(cli, tmp_path, edit, what):
    import numpy as np

    t = np.arange(100) / 50.0
    edit_t = t.copy()
    ds = _tiny_dataset(tmp_path / "ds", t)
    manifest = json.loads((ds / "manifest.json").read_text())
    edit(manifest, edit_t)
    (ds / "manifest.json").write_text(json.dumps(manifest))
    np.save(ds / "sessions" / "s1" / "acc.t.npy", edit_t)
    code, _, err = cli("dataset", "inspect", ds, "--no-plot")
    assert code == 2 and "Traceback" not in err, err
    assert "session 's1' would need" in err and what in err and "more than half this machine's memory" in err
