"""Latency of runners at batch 1 and achieved FLOP/s against this machine's measured matmul peak (torch-free).

The peak is measured with onnxruntime's own MatMul (MLAS) at the same thread count, so "achieved / peak"
compares like with like: how much of what this CPU's GEMM can do does the model's graph get.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import numpy as np

# a one-node ONNX graph c = MatMul(a[m,k], b[k,n]) with symbolic dims (134 bytes, made with onnx.helper)
MATMUL_ONNX = base64.b64decode(
    "CAgSCGVkZ2UtZ21tOnIKHgoBYQoBYhIBYxoLcGVha19tYXRtdWwiBk1hdE11bBILbWF0bXVsX3BlYWtaFQoBYRIQCg4IARIKCgMSAW0KAxIBa1oVCgFi"
    "EhAKDggBEgoKAxIBawoDEgFuYhUKAWMSEAoOCAESCgoDEgFtCgMSAW5CBAoAEA0="
)


@dataclass
class Latency:
    median_ms: float
    p99_ms: float
    mean_ms: float
    iters: int


def time_calls(fn, *, iters: int = 200, warmup: int = 20, max_s: float = 10.0) -> Latency:
    """Call `fn()` `warmup` times, then up to `iters` times (or until `max_s`), and summarize wall times."""
    for _ in range(warmup):
        fn()
    times = []
    deadline = time.perf_counter() + max_s
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    ms = np.array(times) * 1e3
    return Latency(float(np.median(ms)), float(np.percentile(ms, 99)), float(ms.mean()), len(ms))


def matmul_peak_flops(threads: int = 1, n: int = 512, repeats: int = 20) -> float:
    """Best-of-`repeats` FLOP/s of an n x n x n fp32 MatMul in onnxruntime with `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(MATMUL_ONNX, sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    feed = {"a": a, "b": b}
    for _ in range(3):
        sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def bench_runner(runner, *, iters: int = 200, warmup: int = 20, max_s: float = 10.0) -> Latency:
    """Latency of `runner.infer` (already active) on a valid feed; validation is done once, outside the timing."""
    feed = runner.zeros_feed()
    runner.check_feed(feed)
    return time_calls(lambda: runner.infer(feed, check=False), iters=iters, warmup=warmup, max_s=max_s)


def bench_bundle(bundle, *, runners=("onnxrt",), precisions=None, threads=(1,), iters: int = 200, warmup: int = 20,
                 max_s: float = 10.0, run_dir=None, module=None, device: str = "cpu", skip_missing: bool = True, log=lambda m: None) -> list[dict]:
    """One row per runner x precision x thread count: median/p99 latency, achieved FLOP/s vs the matmul peak.

    Runners whose engine is absent (TensorRT here, torch without the run directory) are reported as skipped
    when `skip_missing`, with the reason, instead of failing the whole table.
    """
    from edge_gmm.errors import EdgeGmmError
    from edge_gmm.runtime.bundle import Bundle
    from edge_gmm.runtime.runners import create_runner

    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    flops = float(bundle.manifest.get("model", {}).get("flops", 0) or 0)
    chosen = list(precisions) if precisions else None
    target_precision = bundle.manifest.get("target", {}).get("precision") or bundle.default_precision()
    peaks: dict[int, float] = {}
    rows = []
    for t in threads:
        if device == "cpu":
            peaks[t] = matmul_peak_flops(t)
            log(f"matmul peak, {t} thread(s): {peaks[t] / 1e9:.1f} GFLOP/s")
        for name in runners:
            # TensorRT builds fp16 from the FP32 ONNX: by default it runs what the target asked for
            todo = chosen or ([target_precision] if name == "tensorrt" else bundle.precisions)
            for precision in todo:
                if name == "torch" and precision == "int8":
                    continue
                if name == "tensorrt" and t != threads[0]:
                    continue  # a GPU engine: CPU thread count does not apply
                opts = {"onnxrt": {"threads": t}, "torch": {"threads": t, "run_dir": run_dir, "module": module, "device": device}}.get(name, {})
                row = {"runner": name, "precision": precision, "threads": t}
                try:
                    with create_runner(name, bundle, precision=precision, **opts) as r:
                        lat = bench_runner(r, iters=iters, warmup=warmup, max_s=max_s)
                except EdgeGmmError as e:
                    if not skip_missing:
                        raise
                    row.update(status="skipped: " + str(e).splitlines()[0][:100])
                    rows.append(row)
                    continue
                row.update(median_ms=lat.median_ms, p99_ms=lat.p99_ms, iters=lat.iters, status="ok")
                if flops and device == "cpu":
                    achieved = flops / (lat.median_ms / 1e3)
                    row.update(gflops=achieved / 1e9, peak_pct=100.0 * achieved / peaks[t])
                rows.append(row)
    return rows
