"""The bundle's streaming split: one encoder graph per modality and one fusion graph, from the same weights as
the whole-window graph, held to the same gates (docs/bundle.md, "Streaming graphs").

    section, files = export_stream(model, tmp, target=..., calib_windows=..., eval_windows=..., quantizer="ort")

A device encodes each token once, when its span has arrived, and runs only the fusion graph per window; so
the split must compute what the whole-window graph computes. It is checked where a device would run it: the
encoder calls and the fusion graph composed in ONNX Runtime (runtime/stream.py `StreamGraphs.window`), FP32
against torch (parity), FP16/INT8 against the whole-window FP32 graph (accuracy, top-1 agreement).
Any failed gate raises ExportGateError before anything is written.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_gmm.export import evaluate as ev
from edge_gmm.export.gates import ExportGateError, check_parity, check_quantized
from edge_gmm.export.lint import lint_onnx
from edge_gmm.export.pipeline import PARITY_WINDOWS, _even_subset, _io_specs, torch_outputs
from edge_gmm.runtime.bundle import FUSION, Bundle, encoder_graph

# encoder calls per modality that INT8 calibration sees (spread evenly over the calibration windows' calls):
# a call is one span, so a few hundred cover the windows' range; all of them would cost minutes
CALIBRATION_CALLS = 256


def export_stream(model, tmp: Path, *, target, calib_windows, eval_windows, quantizer: str = "ort",
                  reference: dict[str, np.ndarray] | None = None, log=lambda msg: None) -> tuple[dict, dict]:
    """Export, check and gate the split of `model` for `target` in `tmp`.

    `reference`: the whole-window FP32 graph's outputs over `eval_windows` (what the split's precisions are
    gated against; export_model passes them), else the torch model's. Returns (the manifest's `stream`
    section, {graph: {precision: ONNX path}} for write_bundle)."""
    tmp = Path(tmp)
    if reference is None:
        reference = torch_outputs(model, eval_windows, list(model.modalities), ev.n_windows(eval_windows))
    t0 = time.perf_counter()
    files = {"fp32": export_graphs(model, tmp, target)}
    section = stream_section(model, files["fp32"])
    log(f"stream: exported {len(files['fp32'])} graphs ({', '.join(files['fp32'])}) in {time.perf_counter() - t0:.1f} s")
    outs = {"fp32": run_split(staged(tmp, model, section, files), "fp32", eval_windows)}
    section["parity"] = stream_parity(model, outs["fp32"], eval_windows, target, log)
    extra = {"fp32": {g: {"fp32_nodes": _fp32_nodes(p, target)} for g, p in files["fp32"].items()}}
    if target.precision == "fp16":
        files["fp16"] = {g: to_fp16(p, target) for g, p in files["fp32"].items()}
        extra["fp16"] = extra["fp32"]
    if target.precision == "int8":
        files["int8"], extra["int8"] = quantize_split(model, tmp, section, files, target, calib_windows, quantizer, log)
    tasks = list(model.tasks)
    labels = getattr(eval_windows, "labels", {})
    fp32_acc = ev.accuracy(reference, labels, tasks)
    section["metrics"] = {}
    for precision in files:
        if precision not in outs:
            outs[precision] = run_split(staged(tmp, model, section, files), precision, eval_windows)
        section["metrics"][precision] = split_metrics(precision, outs[precision], reference, fp32_acc, labels, tasks, target, log)
    section["lint"] = lint_split(files, target, log)
    for g, spec in section["graphs"].items():
        spec["artifacts"] = {p: extra[p][g] for p in files}
    return section, {g: {p: files[p][g] for p in files} for g in section["graphs"]}


def graph_file(tmp: Path, graph: str, precision: str) -> Path:
    """Where a graph is staged: the name it gets in the bundle, so a staged Bundle over `tmp` finds it."""
    return Path(tmp) / f"stream.{graph}.{precision}.onnx"


def export_graphs(model, tmp: Path, target) -> dict[str, Path]:
    """Every encoder (one call: samples (1, *call_shape) -> tokens) and the fusion graph, batch 1, FP32,
    rewritten for the target like the whole-window graph and checked strictly."""
    import onnx
    import torch

    from edge_gmm.model.onnx_export import export_module, rewrite_file

    layouts, dim = model.stream_layout(), int(model.token_dim)
    files = {}
    for m in model.modalities:
        path = graph_file(tmp, encoder_graph(m), "fp32")
        x = torch.zeros((1, *layouts[m].call_shape))
        files[encoder_graph(m)] = export_module(model.token_encoder(m), (x,), path, ["samples"], ["tokens"], target.opset)
    fusion = model.fusion()
    args = tuple(torch.zeros((1, layouts[m].tokens, dim)) for m in model.modalities)
    args += tuple(torch.ones((1, layouts[m].tokens)) for m in model.modalities)
    path = graph_file(tmp, FUSION, "fp32")
    files[FUSION] = export_module(fusion, args, path, fusion.input_names, fusion.output_names, target.opset)
    for path in files.values():
        rewrite_file(path, target)
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return files


def stream_section(model, fp32: dict[str, Path]) -> dict:
    """The manifest's `stream` section as far as the graphs themselves say: dim, layouts, I/O, connections."""
    layouts = model.stream_layout()
    graphs = {}
    for name, path in fp32.items():
        inputs, outputs = _io_specs(path)
        graphs[name] = {"inputs": inputs, "outputs": outputs, "artifacts": {}}
    return {
        "dim": int(model.token_dim),
        "batch": 1,
        "layouts": {m: {"span": int(lay.span), "hop": int(lay.hop), "tokens": int(lay.tokens), "per_call": int(lay.per_call)}
                    for m, lay in layouts.items()},
        "graphs": graphs,
        "connects": "encoder.<m> call j (window samples [j*hop, j*hop+span)) returns tokens (1, per_call, D) that fill "
                    "slots [j*per_call, (j+1)*per_call) of fusion input tokens_<m> (1, tokens, D) in time order; "
                    "mask_<m> (1, tokens) is 1 where a slot holds this window's token and 0 where it is missing "
                    "(a modality absent: every slot 0, its values never read)",
    }


def staged(tmp: Path, model, section: dict, files: dict[str, dict[str, Path]]) -> Bundle:
    """An in-memory Bundle over the staged graphs in `tmp`, so the split is checked through the very code
    (StreamGraphs, the onnxrt runner) a device runs it with."""
    st = dict(section)
    st["graphs"] = {g: {**spec, "artifacts": {p: {"file": Path(files[p][g]).name} for p in files}}
                    for g, spec in section["graphs"].items()}
    manifest = {"model": {"name": "staged"}, "modalities": list(model.modalities), "artifacts": {}, "stream": st}
    return Bundle(Path(tmp), manifest, Path(tmp))


def run_split(bundle: Bundle, precision: str, windows, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every output of the composed split (encoder calls, then fusion) over windows: name -> [W, ...]."""
    from edge_gmm.runtime.stream import StreamGraphs

    total = ev.n_windows(windows) if limit is None else min(limit, ev.n_windows(windows))
    with StreamGraphs(bundle, "onnxrt", precision=precision, threads=1) as g:
        rows = [g.window({m: windows.inputs[m][i] for m in g.modalities}, windows.mask[i]) for i in range(total)]
        names = g.outputs
    return {n: np.concatenate([r[n] for r in rows]) for n in names}


def stream_parity(model, split32: dict[str, np.ndarray], eval_windows, target, log) -> dict:
    """The FP32 split in ONNX Runtime against the torch whole-window model, as the whole graph is gated."""
    n = min(PARITY_WINDOWS, ev.n_windows(eval_windows))
    ref = torch_outputs(model, eval_windows, list(model.modalities), n)
    diffs = ev.max_abs_diff({k: v[:n] for k, v in split32.items()}, ref)
    try:
        check_parity(diffs, {k: float(np.abs(v).max()) for k, v in ref.items()}, target.parity_atol)
    except ExportGateError as e:
        raise ExportGateError(f"streaming split: {e.args[0]}", hint=e.hint) from None
    log(f"stream parity (encoders + fusion) vs torch on {n} windows: max |diff| " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    return {"windows": n, "max_abs_diff": diffs, "atol": target.parity_atol, "reference": "torch whole-window model"}


def to_fp16(fp32: Path, target) -> Path:
    """The FP16 twin of one graph (FP32 I/O and log-mel, as the whole graph's)."""
    import onnx

    from edge_gmm.export.fp16 import convert_to_fp16

    out = Path(str(fp32).replace(".fp32.onnx", ".fp16.onnx"))
    onnx.save(convert_to_fp16(onnx.load(str(fp32)), target.fp32_layers), str(out))
    return out


def quantize_split(model, tmp: Path, section: dict, files: dict, target, calib_windows, quantizer: str, log) -> tuple[dict, dict]:
    """INT8 QDQ of every graph: encoders calibrated on encoder calls cut from the calibration windows, the
    fusion graph on those windows' FP32 tokens (what the INT8 encoders approximate) with per-token masks."""
    from edge_gmm.export.quantize import quantize
    from edge_gmm.runtime.stream import StreamGraphs

    t0 = time.perf_counter()
    calib = _even_subset(calib_windows, target.calibration_windows)
    n = ev.n_windows(calib)
    out, info = {}, {}
    for m in model.modalities:
        name = encoder_graph(m)
        calls = encoder_calls(calib, model.modalities.index(m), m, section["layouts"][m])
        out[name] = graph_file(tmp, name, "int8")
        info[name] = quantize(quantizer, files["fp32"][name], out[name], lambda c=calls: ({"samples": x[None]} for x in c), target.fp32_layers)
        info[name].update(calibration_windows=n, calibration_calls=len(calls))
    with StreamGraphs(staged(tmp, model, section, {"fp32": files["fp32"]}), "onnxrt", precision="fp32", threads=1) as g:
        feeds = [g.fusion_feed(*g.window_tokens({m: calib.inputs[m][i] for m in g.modalities}, calib.mask[i])) for i in range(n)]
    out[FUSION] = graph_file(tmp, FUSION, "int8")
    info[FUSION] = quantize(quantizer, files["fp32"][FUSION], out[FUSION], lambda: iter(feeds), target.fp32_layers)
    info[FUSION]["calibration_windows"] = n
    log(f"stream int8 ({quantizer}): {len(out)} graphs on {n} calibration windows in {time.perf_counter() - t0:.1f} s")
    return out, info


def encoder_calls(windows, column: int, m: str, layout: dict, cap: int = CALIBRATION_CALLS) -> list[np.ndarray]:
    """Up to `cap` encoder-call inputs of modality m (column `column` of the mask), spread evenly over the
    calls of the windows where it is present."""
    from edge_gmm.devices.token_streams import TokenLayout
    from edge_gmm.runtime.stream import window_calls

    lay = TokenLayout.from_dict(m, layout)
    present = np.flatnonzero(windows.mask[:, column] > 0.5)
    calls = [c for i in present for c in window_calls(lay, windows.inputs[m][i])]
    if len(calls) > cap:
        calls = [calls[i] for i in np.linspace(0, len(calls) - 1, cap).round().astype(int)]
    return [np.ascontiguousarray(c, dtype=np.float32) for c in calls]


def split_metrics(precision: str, out: dict, reference: dict, fp32_acc: dict, labels, tasks, target, log) -> dict:
    """Accuracy and top-1 agreement of the composed split against the whole-window FP32 graph; FP16/INT8
    are gated as the whole graph's are."""
    acc = ev.accuracy(out, labels, tasks)
    agree = ev.agreement(out, {k: v[: len(next(iter(out.values())))] for k, v in reference.items()}, tasks)
    if precision != "fp32":
        check_quantized(f"streaming split {precision}", fp32_acc, acc, agree, target.max_accuracy_drop, target.min_top1_agreement)
    log(f"stream {precision}: accuracy {acc}, agreement with the whole-window fp32 graph {agree}")
    return {"accuracy": acc, "top1_agreement": agree, "windows": len(next(iter(out.values())))}


def lint_split(files: dict[str, dict[str, Path]], target, log) -> dict[str, dict]:
    """Lint each graph as TensorRT will parse it (the QDQ graph for int8, as pipeline.py does); for a
    TensorRT target a failure stops the export, naming the graph."""
    precision = "int8" if "int8" in files else ("fp16" if "fp16" in files and target.runtime == "onnxruntime" else "fp32")
    reports = {}
    for graph, path in files[precision].items():
        lint = lint_onnx(path, target)
        if not lint.ok and target.runtime == "tensorrt":
            first = lint.issues[0]
            raise ExportGateError(f"TensorRT lint of streaming graph {graph!r}: node {first['node']!r} ({first['op']}): {first['problem']}"
                                  + (f" (+{len(lint.issues) - 1} more)" if len(lint.issues) > 1 else ""),
                                  hint=f"target {target.name} (TensorRT {target.tensorrt_version}) cannot parse this graph")
        reports[graph] = lint.to_dict()
    log(f"stream lint ({target.name}, {precision}): " + ", ".join(f"{g} {'ok' if r['ok'] else 'FAIL'}" for g, r in reports.items()))
    return reports


def golden_errors(tmp: Path, model, section: dict, files: dict[str, dict[str, Path]], golden_path: Path,
                  inputs: list[dict], outputs: list[dict]) -> dict[str, float]:
    """precision -> the composed split's error on the golden feeds against their FP32 references (the scale
    runtime/golden.py uses): what `edge-gmm doctor` bounds a device's split by, as `export_error` bounds its
    whole-window engine."""
    from edge_gmm.runtime.doctor import run_split_golden
    from edge_gmm.runtime.golden import Golden, relative_error
    from edge_gmm.runtime.stream import StreamGraphs

    with np.load(golden_path) as z:
        feeds_n = z["input_0"].shape[0]
        feeds = [{t["name"]: z[f"input_{i}"][k] for i, t in enumerate(inputs)} for k in range(feeds_n)]
        refs = {t["name"]: z[f"output_{j}"] for j, t in enumerate(outputs)}
    golden = Golden(feeds, refs, feeds_n)
    by_precision = {p: {g: files[g][p] for g in files} for p in next(iter(files.values()))}
    bundle = staged(tmp, model, section, by_precision)
    errors = {}
    for precision in by_precision:
        with StreamGraphs(bundle, "onnxrt", precision=precision, threads=1) as g:
            errors[precision] = max(relative_error(run_split_golden(g, golden), refs).values())
    return errors


def _fp32_nodes(path: Path, target) -> list[str]:
    """The graph's nodes TensorRT pins to FP32 (the log-mel front end), as the whole graph records them."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return [n.name for n in proto.graph.node if any(p in n.name for p in target.fp32_layers)]
