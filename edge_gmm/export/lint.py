"""TensorRT lint: will the target's TensorRT ONNX parser take this graph?

Checks, each naming the node or tensor at fault:
- every op is in export/tensorrt-onnx-ops.toml and no newer than the target's TensorRT (default domain only);
- graph I/O are static-shaped and not bool/int64; every intermediate shape is static;
- the opset is within the target's [min_opset, max_opset];
- Q/DQ zero points are int8 zeros (TensorRT takes signed symmetric quantization only);
- Conv weights are constants (an initializer, or a DequantizeLinear of one).
For an ONNX Runtime target only the structural checks apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, shape_inference

from edge_gmm.export.targets import op_table, trt_version, uses_tensorrt

BAD_IO_TYPES = {TensorProto.BOOL: "bool", TensorProto.INT64: "int64", TensorProto.DOUBLE: "float64"}


@dataclass
class LintReport:
    target: str
    issues: list[dict] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)  # op -> count
    opset: int = 0

    @property
    def ok(self) -> bool:
        return not self.issues

    def add(self, where: str, op: str, problem: str) -> None:
        self.issues.append({"node": where, "op": op, "problem": problem})

    def to_dict(self) -> dict:
        return {"ok": self.ok, "target": self.target, "opset": self.opset, "ops": self.ops, "issues": self.issues}

    def summary(self) -> str:
        if self.ok:
            return f"ok ({sum(self.ops.values())} nodes, {len(self.ops)} op types, opset {self.opset})"
        first = self.issues[0]
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        return f"FAIL: node {first['node']!r} ({first['op']}): {first['problem']}{more}"


def lint_onnx(model: onnx.ModelProto | str | Path, target, table: dict[str, str] | None = None) -> LintReport:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    report = LintReport(target=target.name)
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report.opset = opset
    if not target.min_opset <= opset <= target.max_opset:
        report.add("<model>", "opset", f"opset {opset} outside the target's range [{target.min_opset}, {target.max_opset}]")

    for vi in [*g.input, *g.output]:
        tt = vi.type.tensor_type
        if tt.elem_type in BAD_IO_TYPES:
            report.add(vi.name, "graph I/O", f"{BAD_IO_TYPES[tt.elem_type]} graph I/O; TensorRT engines take float/int32/int8 I/O")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not tt.HasField("shape") or any(d is None or d <= 0 for d in dims):
            report.add(vi.name, "graph I/O", f"dynamic or unknown shape {dims}; export with static shapes")
    try:
        inferred = shape_inference.infer_shapes(model)
        for vi in inferred.graph.value_info:
            dims = vi.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                report.add(vi.name, "tensor", "dynamic intermediate shape; export with static shapes")
                break  # one is enough to say the export is not static
    except Exception as e:  # an invalid graph is itself a lint failure
        report.add("<model>", "shape inference", str(e).splitlines()[0])

    trt = uses_tensorrt(target)
    table = table if table is not None else (op_table() if trt else {})
    target_trt = trt_version(getattr(target, "tensorrt_version", "") or "0")
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    for node in g.node:
        report.ops[node.op_type] = report.ops.get(node.op_type, 0) + 1
        name = node.name or node.output[0]
        if trt:
            if node.domain not in ("", "ai.onnx"):
                report.add(name, f"{node.domain}::{node.op_type}", "custom-domain op; TensorRT's ONNX parser takes only standard ops")
                continue
            since = table.get(node.op_type)
            if since is None:
                report.add(name, node.op_type, "not supported by TensorRT's ONNX parser (see export/tensorrt-onnx-ops.toml)")
            elif trt_version(since) > target_trt:
                report.add(name, node.op_type, f"needs TensorRT >= {since}; the target has {target.tensorrt_version}")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2] in inits:
            zp = inits[node.input[2]]
            if zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
                report.add(name, node.op_type, "zero point must be int8 zeros (signed symmetric quantization)")
        if trt and node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = node.input[1]
            src = producers.get(w)
            constant = w in inits or (src is not None and src.op_type in ("Constant", "DequantizeLinear") and (src.op_type == "Constant" or src.input[0] in inits))
            if not constant:
                report.add(name, node.op_type, "weights must be a constant (initializer) for TensorRT")
    return report
