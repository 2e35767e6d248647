"""Graph rewrites for older TensorRT on small hand-built graphs: ORT computes the same before and after,
the rewrite is chosen by the target's TensorRT, and the decomposed LayerNorm stays FP32 under FP16."""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_gmm.export.fp16 import convert_to_fp16
from edge_gmm.export.lint import lint_onnx
from edge_gmm.export.rewrites import needed_rewrites, rewrite_for_target
from edge_gmm.export.targets import DECOMPOSED_FP32, load_target

TRT85 = load_target("jetson-xavier-nx-fp16")
TRT86 = load_target("jetson-orin-jp6.0-fp16")
TRT103 = load_target("jetson-orin-nx-fp16")
RNG = np.random.default_rng(0)


def model(nodes, shape, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def layernorm(shape=(1, 5, 8), axis=-1, bias=True, opset=17):
    norm = shape[axis:] if axis >= 0 else shape[len(shape) + axis:]
    inits = [numpy_helper.from_array(RNG.standard_normal(norm).astype(np.float32), "scale")]
    ins = ["x", "scale"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(norm).astype(np.float32), "bias"))
        ins.append("bias")
    node = helper.make_node("LayerNormalization", ins, ["y"], name="blocks.0/norm1", axis=axis, epsilon=1e-5)
    return model([node], list(shape), inits, opset)


def run(m, x):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [17, 18])  # ReduceMean takes axes as an attribute below 18, as an input from 18
@pytest.mark.parametrize("axis,bias", [(-1, True), (-1, False), (1, True)])
def test_layernorm_decomposed_for_trt85_computes_the_same(opset, axis, bias):
    ref = layernorm(axis=axis, bias=bias, opset=opset)
    x = (RNG.standard_normal((1, 5, 8)) * 30).astype(np.float32)
    m = copy.deepcopy(ref)
    assert rewrite_for_target(m, TRT85) == ["LayerNormalization"]
    ops = [n.op_type for n in m.graph.node]
    assert "LayerNormalization" not in ops and {"ReduceMean", "Sub", "Pow", "Sqrt", "Reciprocal"} <= set(ops)
    assert all(DECOMPOSED_FP32 in n.name for n in m.graph.node)
    np.testing.assert_allclose(run(m, x), run(ref, x), rtol=1e-5, atol=1e-5)
    op_issues = lambda g: [i["op"] for i in lint_onnx(g, TRT85).issues if i["op"] != "opset"]  # noqa: E731
    assert op_issues(m) == [] and op_issues(ref) == ["LayerNormalization"]  # TensorRT 8.5 refuses the native op


def test_rewrites_follow_the_targets_tensorrt():
    assert needed_rewrites(layernorm(), TRT85) == ["LayerNormalization"]
    assert needed_rewrites(layernorm(), TRT86) == []  # native LayerNormalization since 8.6
    assert needed_rewrites(layernorm(), TRT103) == []
    assert needed_rewrites(layernorm(), load_target("cpu-onnx-fp32")) == []  # ONNX Runtime takes it


def test_decomposed_layernorm_stays_fp32_under_fp16():
    m = layernorm()
    rewrite_for_target(m, TRT85)
    half = convert_to_fp16(m, TRT85.fp32_layers)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in half.graph.value_info}
    sq = next(n.output[0] for n in half.graph.node if n.op_type == "Pow")
    assert types[sq] == TensorProto.FLOAT  # (x - mean)^2 past 256^2 would overflow fp16
    plain = convert_to_fp16(m, ["logmel"])  # without the keep pattern the pieces would go fp16
    assert {vi.name: vi.type.tensor_type.elem_type for vi in plain.graph.value_info}[sq] == TensorProto.FLOAT16
    x = (RNG.standard_normal((1, 5, 8)) * 1000).astype(np.float32)
    np.testing.assert_allclose(run(half, x), run(m, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_becomes_erf_or_tanh_for_trt_below_10(approximate):
    node = helper.make_node("Gelu", ["x"], ["y"], name="mlp/act", approximate=approximate)
    ref, m = model([node], [2, 16], opset=20), model([node], [2, 16], opset=20)
    old = load_target("jetson-orin-nx-fp16")
    old.tensorrt_version, old.max_opset = "8.6", 20  # a TensorRT without Gelu meeting an opset-20 graph
    assert rewrite_for_target(m, old) == ["Gelu"]
    assert {n.op_type for n in m.graph.node} >= ({"Erf"} if approximate == "none" else {"Tanh"})
    x = np.linspace(-6, 6, 32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_allclose(run(m, x), run(ref, x), rtol=1e-5, atol=1e-6)
    assert rewrite_for_target(model([node], [2, 16], opset=20), TRT103) == []  # 10.x parses Gelu


def test_layernorm_with_statistics_outputs_is_refused_not_miscompiled():
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln")
    m = model([node], [1, 4], [numpy_helper.from_array(np.ones(4, np.float32), "scale")])
    m.graph.output.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 1]))
    with pytest.raises(ValueError, match="Mean/InvStdDev"):
        rewrite_for_target(m, TRT85)
    onnx.checker.check_model(m)
