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
