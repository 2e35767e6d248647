"""bench_real.py (issue 11) keeps working: its quick mode end to end on the smallest real row, plus the
keyword set's voice split and the log-mel peer's features, which need no training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of scripts, not an installed package


def test_kws_test_voices_never_train():
    from benchmarks.real_data import KWS_WORDS, _kws_jobs

    jobs = _kws_jobs()
    voices = {split: {v for s, _, v, *_ in jobs if s == split} for split in ("train", "test")}
    assert voices["train"] and voices["test"] and not voices["train"] & voices["test"]
    for split in ("train", "test"):  # every word said by every voice of the split
        words = {(v, w) for s, w, v, *_ in jobs if s == split}
        assert len(words) == len(voices[split]) * len(KWS_WORDS)


def test_logmel_stats_shape_and_filterbank():
    from benchmarks.real_peers import logmel_stats, mel_filterbank

    fb = mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257) and (fb.sum(axis=1) > 0).all()
    x = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32)
    f = logmel_stats(x)
    assert f.shape == (3, 80) and np.isfinite(f).all()


@pytest.mark.slow
def test_quick_mode_one_tiny_row(tmp_path):
    pytest.importorskip("aeon")
    doc = REPO / "docs" / "benchmarks.md"
    before = doc.read_text() if doc.exists() else None
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_real.py"), "--quick", "--only", "italypowerdemand",
           "--work", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert "error" not in row, row
    w = row["windows"]  # UCR's own split; a validation set too small to select on is trained on as well
    assert w["test"] == 1029 and w["train"] + (0 if w.get("val_trained_on") else w["val"]) == 67
    for key in ("peer_acc", "teacher", "student_torch", "student_fp32", "student_int8"):
        assert 0 <= row[key] <= 100, key
    assert row["peer_acc"] > 80  # MiniRocket gets ~96 %: far lower means peer inputs and labels are misaligned
    assert abs(row["student_fp32"] - row["student_torch"]) < 1.0  # ORT FP32 computes what torch computes
    assert row["ms_int8"] > 0 and row["fit_s"] > 0 and row["int8_gate"] in ("ok", "FAILED")
    assert set(row["targets"]) == {"vs_peer", "vs_teacher", "fit_5min"}
    assert "| ItalyPowerDemand |" in proc.stdout and "/1029 |" in proc.stdout
    assert (doc.read_text() if doc.exists() else None) == before  # --quick never publishes


def test_set_overrides_reach_the_config_and_the_child_command():
    from benchmarks.bench_real import overrides, parse

    over = overrides(3, False, ["model.student=student-small", "train.lr=0.001"])
    assert over == {"train.seed": 3, "model.student": "student-small", "train.lr": 0.001}
    args = parse(["--only", "gunpoint", "--set", "model.student=student-small"])
    assert args.set == ["model.student=student-small"]
