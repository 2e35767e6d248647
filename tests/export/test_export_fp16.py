"""FP16 conversion keeps graph I/O FP32 and the log-mel island FP32 (its power overflows fp16)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge_gmm.export.fp16 import convert_to_fp16


def logmel_like():
    """x (1,64) -> 'logmel' power + log (FP32-only: x*x*100 reaches 1e6) -> MatMul W -> y (1,8)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8)).astype(np.float32) / 8
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["p"], name="logmel/node_power"),
        helper.make_node("Mul", ["p", "gain"], ["pg"], name="logmel/node_gain"),
        helper.make_node("Add", ["pg", "eps"], ["pe"], name="logmel/node_add"),
        helper.make_node("Log", ["pe"], ["lm"], name="logmel/node_log"),
        helper.make_node("MatMul", ["lm", "W"], ["h"], name="head/matmul"),
        helper.make_node("Cast", ["h"], ["hc"], name="head/cast", to=TensorProto.FLOAT),
        helper.make_node("Relu", ["hc"], ["y"], name="head/relu"),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(100.0, np.float32), "gain"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_io_stays_fp32_weights_become_fp16_logmel_stays_fp32():
    half = convert_to_fp16(logmel_like())
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["W"] == TensorProto.FLOAT16
    assert inits["gain"] == TensorProto.FLOAT and inits["eps"] == TensorProto.FLOAT  # read only by log-mel nodes
    cast = next(n for n in half.graph.node if n.name == "head/cast")
    assert cast.attribute[0].i == TensorProto.FLOAT16


def test_fp16_matches_fp32_where_plain_fp16_would_overflow():
    x = np.random.default_rng(1).uniform(-100, 100, (1, 64)).astype(np.float32)  # power * gain up to 1e6 > 65504
    ref = run(logmel_like(), x)
    got = run(convert_to_fp16(logmel_like()), x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)
    # (ORT's CPU provider upcasts fp16 elementwise ops internally, so the overflow itself only shows on a GPU;
    # what we can check here is that the island's tensors are typed FP32 in the converted graph)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in convert_to_fp16(logmel_like()).graph.value_info}
    assert types["pg"] == TensorProto.FLOAT and types["lm"] == TensorProto.FLOAT and types["h"] == TensorProto.FLOAT16
