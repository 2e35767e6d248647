"""bench_stream.py (issue 15) keeps working, in seconds: its CPU rows (both modes make the same predictions from
the same chunks), its live row and its FLOPs count, on the loop kit's small real-ONNX bundle with the streaming
split (tests/devices/test_loop_kit.py) instead of an exported student (the benchmark's own ~35 s build)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "devices"))

from benchmarks import bench_stream as bs  # noqa: E402
from test_loop_kit import make_bundle, make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-stream")
    return make_bundle(root / "bundle"), make_dataset(root / "ds", sessions=1, seconds=4.0)


def test_cpu_rows_make_the_same_predictions_in_both_modes(kit):
    from edge_gmm.runtime.bundle import Bundle

    bundle = Bundle.open(kit[0])
    chunks, origin = bs.recording_chunks(kit[1], bundle.sensors, 3.0)
    assert chunks and all(float(a.t[-1]) <= float(b.t[-1]) for a, b in zip(chunks, chunks[1:]))  # in time order
    whole_ms, whole_n = bs.cpu_whole(bundle, chunks, origin, 0.1, 3.0)
    stream_ms, stream_n, enc_ms = bs.cpu_stream(bundle, chunks, origin, 0.1, 3.0)
    assert whole_n == stream_n > 10  # ~2 s of full windows at 10 predictions/s
    assert whole_ms > 0 and stream_ms > enc_ms > 0
    book_ms = bs.cpu_stream(bundle, chunks, origin, 0.1, 3.0, run=False)[0]
    assert 0 < book_ms < stream_ms  # the bookkeeping alone costs less than bookkeeping plus inference


def test_a_live_row_streams_at_the_rate_without_drops(kit, tmp_path):
    row = bs.live_row(bs.live(kit[0], kit[1], tmp_path, 0.1, 2.5, whole=False))
    assert row["pred/s"] > 0 and row["dropped"] == 0 and row["fusion p50 ms"] > 0
    assert row["arrival→publish p99 ms"] >= row["arrival→publish p50 ms"] > 0


def test_streaming_flops_per_prediction_fall_below_the_whole_window_at_a_fast_rate():
    torch = pytest.importorskip("torch")
    from edge_gmm.data import synth
    from edge_gmm.model.gmm import build_model

    sc = synth.get_scenario("machine-health")
    torch.manual_seed(0)
    model = build_model("student-tiny", sc.sensors(), sc.window(), sc.tasks()).eval()
    whole, enc, fusion, calls = bs.stream_flops(model)
    assert set(enc) == set(calls) == set(model.modalities) and 0 < fusion < whole
    per_prediction = fusion + sum(enc[m] * calls[m] for m in enc) / 10.0  # at 10 predictions/s
    assert per_prediction < whole
