"""Graph rewrites for an older TensorRT: replace an op the target's ONNX parser lacks by standard ops it has.

Chosen by the target, not by hand: a node is rewritten when export/tensorrt-onnx-ops.toml says the target's
TensorRT does not take its op and a rewrite for that op exists here.
- LayerNormalization (TensorRT < 8.6) -> ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Reciprocal / Mul / Add.
  Its nodes are named `<node>/ln_fp32/...` and kept FP32 under FP16 (targets.DECOMPOSED_FP32): a squared
  deviation above 256 overflows fp16's 65504, which the native layer guards against and the pieces do not.
- Gelu (TensorRT < 10, or a graph exported at opset 20) -> 0.5 x (1 + erf(x / sqrt 2)) or its tanh form.
  torch already writes GELU as Erf below opset 20; this covers graphs from elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from edge_gmm.export.targets import DECOMPOSED_FP32, op_supported, uses_tensorrt


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class _Builder:
    """Collects the nodes and constants that replace one node, named under its name."""

    def __init__(self, model: onnx.ModelProto, node: onnx.NodeProto, scope: str):
        self.model, self.prefix = model, f"{node.name or node.output[0]}/{scope}"
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str, value) -> str:
        full = f"{self.prefix}{name}"
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), full))
        return full

    def op(self, op_type: str, inputs: list[str], name: str, output: str = "", **attrs) -> str:
        out = output or f"{self.prefix}{name}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}{name}", **attrs))
        return out

    def reduce_mean(self, x: str, axes: list[int], name: str) -> str:
        if _opset(self.model) >= 18:  # axes became an input at opset 18
            axes_name = f"{self.prefix}{name}_axes"
            self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(axes, np.int64), axes_name))
            return self.op("ReduceMean", [x, axes_name], name, keepdims=1)
        return self.op("ReduceMean", [x], name, axes=axes, keepdims=1)


def decompose_layernorm(model: onnx.ModelProto, node: onnx.NodeProto, ranks: dict[str, int]) -> list[onnx.NodeProto]:
    """Y = (X - mean) / sqrt(var + eps) * scale + bias over axes [axis, rank); computed in FP32 (stash_type 1)."""
    if len([o for o in node.output if o]) > 1:
        raise ValueError(f"{node.name}: LayerNormalization with Mean/InvStdDev outputs is not decomposed")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis, eps = int(attrs.get("axis", -1)), float(attrs.get("epsilon", 1e-5))
    x = node.input[0]
    rank = ranks.get(x)
    if axis < 0:
        axes = list(range(axis, 0))
    elif rank is not None:
        axes = list(range(axis, rank))
    else:
        raise ValueError(f"{node.name}: LayerNormalization axis {axis} on a tensor of unknown rank")
    b = _Builder(model, node, DECOMPOSED_FP32)
    mean = b.reduce_mean(x, axes, "mean")
    dev = b.op("Sub", [x, mean], "dev")
    var = b.reduce_mean(b.op("Pow", [dev, b.const("two", 2.0)], "sq"), axes, "var")
    std = b.op("Sqrt", [b.op("Add", [var, b.const("eps", eps)], "var_eps")], "std")
    # dev * (1 / std), not dev / std: ONNX Runtime's LayerNormFusion re-fuses the Div form across the fp16->fp32
    # Cast in front of it and the fp16 artifact then fails to load (mixed fp16/fp32 LayerNormalization)
    y = b.op("Mul", [dev, b.op("Reciprocal", [std], "inv_std")], "norm")
    has_bias = len(node.input) > 2 and node.input[2]
    y = b.op("Mul", [y, node.input[1]], "scale", output="" if has_bias else node.output[0])
    if has_bias:
        b.op("Add", [y, node.input[2]], "bias", output=node.output[0])
    return b.nodes


def gelu_to_erf(model: onnx.ModelProto, node: onnx.NodeProto, ranks: dict[str, int]) -> list[onnx.NodeProto]:
    """Gelu(x) = 0.5 x (1 + erf(x / sqrt 2)); approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    approx = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "approximate"), b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    x = node.input[0]
    b = _Builder(model, node, "gelu/")
    if approx == "tanh":
        cube = b.op("Mul", [b.op("Mul", [x, x], "x2"), x], "x3")
        inner = b.op("Add", [x, b.op("Mul", [cube, b.const("c", 0.044715)], "cx3")], "inner")
        core = b.op("Tanh", [b.op("Mul", [inner, b.const("k", math.sqrt(2 / math.pi))], "kinner")], "tanh")
    else:
        core = b.op("Erf", [b.op("Div", [x, b.const("sqrt2", math.sqrt(2.0))], "scaled")], "erf")
    half_x = b.op("Mul", [x, b.const("half", 0.5)], "half_x")
    b.op("Mul", [half_x, b.op("Add", [core, b.const("one", 1.0)], "one_plus")], "out", output=node.output[0])
    return b.nodes


# op -> rewrite: (model, node, ranks of tensors) -> the nodes that replace it
REWRITES = {"LayerNormalization": decompose_layernorm, "Gelu": gelu_to_erf}


def needed_rewrites(model: onnx.ModelProto, target, table: dict[str, str] | None = None) -> list[str]:
    """The ops of `model` that the target's TensorRT does not take and that a rewrite here replaces."""
    if not uses_tensorrt(target):
        return []
    ops = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    return sorted(op for op in ops if op in REWRITES and not op_supported(op, target, table))


def rewrite_for_target(model: onnx.ModelProto, target, table: dict[str, str] | None = None) -> list[str]:
    """Rewrite `model` in place for the target's TensorRT; returns the ops rewritten (empty: unchanged)."""
    ops = needed_rewrites(model, target, table)
    if not ops:
        return []
    ranks = _ranks(model)
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        fn = REWRITES.get(node.op_type) if node.op_type in ops and node.domain in ("", "ai.onnx") else None
        new_nodes.extend(fn(model, node, ranks) if fn else [node])
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    del model.graph.value_info[:]  # stale for the replaced tensors; the checker re-infers
    onnx.checker.check_model(model)
    return ops


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in [*g.input, *g.output, *g.value_info]
           if vi.type.tensor_type.HasField("shape")}
    out.update({i.name: len(i.dims) for i in g.initializer})
    return out
