"""Run an ONNX artifact over windows with onnxruntime and score it: accuracy per task, top-1 agreement,
and (when INT8 disappoints) which quantized layers lose the most signal.

`windows` is anything with `.inputs` (modality -> [W, ...] float32), `.mask` ([W, M]) and `.labels`
(task -> int64[W], -1 = unlabeled), e.g. edge_gmm.data.windowing.Windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np


def n_windows(windows) -> int:
    return int(windows.mask.shape[0])


def iter_feeds(windows, modalities: list[str], batch: int, limit: int | None = None, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of exactly `batch` windows (the graph's batch is static); the tail is padded by repeating the last."""
    total = n_windows(windows) if limit is None else min(limit, n_windows(windows))
    for s in range(start, total, batch):
        idx = np.arange(s, s + batch).clip(max=total - 1)
        feed = {m: np.ascontiguousarray(windows.inputs[m][idx], dtype=np.float32) for m in modalities}
        feed["mask"] = np.ascontiguousarray(windows.mask[idx], dtype=np.float32)
        yield feed


def session(path: str | Path, threads: int = 1):
    """A CPU session; one thread by default: batch-1 windows of a small model gain nothing from more, and
    spinning worker threads on a shared machine make evaluation many times slower."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path, windows, modalities: list[str], batch: int, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every output over the first `limit` windows: name -> [W, ...]."""
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    total = n_windows(windows) if limit is None else min(limit, n_windows(windows))
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in iter_feeds(windows, modalities, batch, total):
        for n, v in zip(names, sess.run(names, feed)):
            chunks[n].append(v)
    return {n: np.concatenate(v)[:total] for n, v in chunks.items()}


def classification_tasks(tasks) -> list[str]:
    return [t.name for t in tasks if t.type == "classification"]


def accuracy(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], tasks) -> dict[str, float]:
    """Percent correct per classification task over labeled windows (label >= 0)."""
    acc = {}
    for task in classification_tasks(tasks):
        y = np.asarray(labels.get(task, []))[: len(outputs[f"logits_{task}"])]
        ok = y >= 0
        if ok.any():
            pred = outputs[f"logits_{task}"][: len(y)].argmax(-1)
            acc[task] = float(100.0 * (pred[ok] == y[ok]).mean())
    return acc


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tasks) -> dict[str, float]:
    """Fraction of windows where both give the same top-1 class, per classification task."""
    return {t: float((a[f"logits_{t}"].argmax(-1) == b[f"logits_{t}"].argmax(-1)).mean()) for t in classification_tasks(tasks)}


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a if k in b}


def layer_errors(fp32_path: Path, int8_path: Path, windows, modalities: list[str], batch: int, limit: int = 16, top: int = 5) -> list[dict]:
    """The quantized layers whose outputs drift most from FP32 (lowest SQNR in dB), worst first.

    The output tensor of each Conv/MatMul/Gemm keeps its name through QDQ insertion, so both graphs expose
    the same names once they are made graph outputs.
    """
    import onnx
    from onnx import helper

    from edge_gmm.export.quantize import OPS_TO_QUANTIZE

    q = onnx.load(str(int8_path))
    f = onnx.load(str(fp32_path))
    fp32_out = {n.name: n.output[0] for n in f.graph.node}
    dq_outputs = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    # (node, op, tensor in the int8 graph, same node's tensor in the fp32 graph): QDQ keeps node names but may
    # rename a quantized node's output (e.g. "<out>_QuantizeLinear_Input")
    layers = [(n.name, n.op_type, n.output[0], fp32_out[n.name]) for n in q.graph.node
              if n.op_type in OPS_TO_QUANTIZE and n.name in fp32_out and any(i in dq_outputs for i in n.input)]
    if not layers:
        return []
    tmpdir = Path(int8_path).parent
    outs = {}
    for tag, m, col in (("fp32", f, 3), ("int8", q, 2)):
        have = {o.name for o in m.graph.output}
        m.graph.output.extend(helper.make_tensor_value_info(t[col], onnx.TensorProto.FLOAT, None) for t in layers if t[col] not in have)
        probe = tmpdir / f".probe-{tag}.onnx"
        onnx.save(m, str(probe))
        try:
            outs[tag] = run_onnx(probe, windows, modalities, batch, limit)
        finally:
            probe.unlink(missing_ok=True)
    rows = []
    for name, op, t8, t32 in layers:
        ref, got = outs["fp32"][t32].astype(np.float64), outs["int8"][t8].astype(np.float64)
        noise = float(((ref - got) ** 2).mean())
        signal = float((ref**2).mean())
        sqnr = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
        rows.append({"node": name, "op": op, "sqnr_db": round(float(sqnr), 2)})
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows[:top]
