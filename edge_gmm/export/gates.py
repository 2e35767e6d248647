"""Quality gates an export must pass: ONNX-vs-torch parity, INT8/FP16 accuracy, TensorRT lint."""

from __future__ import annotations

from edge_gmm.errors import EdgeGmmError


class ExportGateError(EdgeGmmError):
    """An exported artifact is not good enough to ship; the message says which gate and by how much."""


def check_parity(diffs: dict[str, float], ref_scale: dict[str, float], atol: float) -> None:
    """|ONNX - torch| per output must stay under atol x max(1, |torch| max)."""
    bad = {k: v for k, v in diffs.items() if v > atol * max(1.0, ref_scale.get(k, 1.0))}
    if bad:
        name, diff = max(bad.items(), key=lambda kv: kv[1])
        raise ExportGateError(
            f"parity: ONNX output {name!r} differs from torch by {diff:.3g} (tolerance {atol:g} x scale)",
            hint="the exporter changed the computation; rerun with --debug and compare per node, or raise parity_atol in the target",
        )


def check_quantized(precision: str, fp32_acc: dict[str, float], acc: dict[str, float], agree: dict[str, float],
                    max_drop: float, min_agreement: float, worst_layers: list[dict] | None = None) -> list[str]:
    """Raise when any task loses more than `max_drop` points or top-1 agreement falls below `min_agreement`."""
    failures = []
    for task, a32 in fp32_acc.items():
        drop = a32 - acc.get(task, 0.0)
        if drop > max_drop:
            failures.append(f"task {task!r}: {precision} accuracy {acc.get(task, 0.0):.2f}% vs fp32 {a32:.2f}% (drop {drop:.2f} > {max_drop:g} points)")
    for task, ag in agree.items():
        if ag < min_agreement:
            failures.append(f"task {task!r}: top-1 agreement with fp32 {100 * ag:.2f}% < {100 * min_agreement:g}%")
    if failures:
        layers = ""
        if worst_layers:
            layers = "; layers that lose the most (SQNR dB): " + ", ".join(f"{r['node']} ({r['op']}) {r['sqnr_db']}" for r in worst_layers[:3])
        raise ExportGateError(
            f"{precision} gate failed: " + "; ".join(failures) + layers,
            hint="calibrate on more/representative training windows (calibration_windows), keep the named layers FP32 "
            "(fp32_layers in the target), or relax max_accuracy_drop / min_top1_agreement",
        )
    return failures
