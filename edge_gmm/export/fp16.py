"""FP32 -> FP16 ONNX conversion with FP32 graph I/O and FP32 islands (the log-mel frontend).

Why our own: the log-mel power spectrum of a full-scale 16 kHz window reaches ~1e5, past fp16's 65504, so
those nodes must stay FP32; inputs/outputs stay FP32 so the device code does not change with precision.

Rule: every float tensor produced by a kept node becomes fp16; float initializers read only by kept nodes
are stored as fp16; where an fp16 tensor meets an FP32 consumer (or the reverse) a Cast is inserted, one per
tensor and direction. Casts and constants inside kept nodes are retargeted to fp16.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
# inputs that the ONNX spec requires to stay float32 whatever the data type (op -> input indices)
FP32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


def convert_to_fp16(model: onnx.ModelProto, fp32_patterns: tuple[str, ...] | list[str] = ("logmel",)) -> onnx.ModelProto:
    model = shape_inference.infer_shapes(model, strict_mode=True)
    g = model.graph
    types: dict[str, int] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {i.name: i for i in g.initializer}
    for name, init in inits.items():
        types[name] = init.data_type

    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in g.node:
        for idx, name in enumerate(node.input):
            consumers[name].append((node, idx))

    kept32 = {id(n) for n in g.node if any(p in n.name for p in fp32_patterns)}
    # a Constant feeding only FP32 nodes stays FP32 too (keeps the DFT/mel constants exact)
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] in consumers and all(id(c) in kept32 for c, _ in consumers[n.output[0]]):
            kept32.add(id(n))

    def wants_half(node, idx) -> bool:
        return id(node) not in kept32 and idx not in FP32_ONLY_INPUTS.get(node.op_type, ())

    half: set[str] = set()
    for node in g.node:
        if id(node) in kept32:
            continue
        for out in node.output:
            if types.get(out) == FLOAT:
                half.add(out)
        _retarget_attributes(node)
    graph_outputs = {o.name for o in g.output}
    for name, init in inits.items():
        uses = consumers.get(name, [])
        if init.data_type == FLOAT and uses and name not in graph_outputs and all(wants_half(n, i) for n, i in uses):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name))
            half.add(name)

    # insert Casts where an edge changes precision
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast_of(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"cast_{casts[key]}"))
        return casts[key]

    ordered: list[onnx.NodeProto] = []
    for node in g.node:
        for idx, name in enumerate(node.input):
            if not name or types.get(name) != FLOAT:
                continue
            is_half, need_half = name in half, wants_half(node, idx)
            if is_half != need_half:
                node.input[idx] = cast_of(name, HALF if need_half else FLOAT)
        ordered.extend(new_nodes)
        new_nodes.clear()
        ordered.append(node)

    # graph outputs stay FP32: the producer writes <name>__fp16, a final Cast restores <name>
    for out in g.output:
        if out.name in half:
            inner = f"{out.name}__fp16"
            for node in ordered:
                for i, o in enumerate(node.output):
                    if o == out.name:
                        node.output[i] = inner
                for i, o in enumerate(node.input):
                    if o == out.name:
                        node.input[i] = inner
            ordered.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"cast_{out.name}_to_fp32"))
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    model = shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def _retarget_attributes(node: onnx.NodeProto) -> None:
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = HALF
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
            arr = numpy_helper.to_array(attr.t).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
