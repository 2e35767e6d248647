"""TensorRT lint on small hand-built graphs: each failure names the node and what is wrong."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_gmm.export.lint import lint_onnx
from edge_gmm.export.targets import op_table
from edge_gmm.export.targets import load_target

TRT = load_target("jetson-orin-nano-int8")  # TensorRT 10.3, opset 9..20


def graph(nodes, inputs=None, outputs=None, inits=(), opset=18, domains=()):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset), *[helper.make_opsetid(d, 1) for d in domains]])
    m.ir_version = 9
    return m


def test_supported_graph_passes():
    m = graph([helper.make_node("Relu", ["x"], ["h"], name="act"), helper.make_node("Softmax", ["h"], ["y"], name="sm")])
    report = lint_onnx(m, TRT)
    assert report.ok, report.issues
    assert report.ops == {"Relu": 1, "Softmax": 1}


def test_unsupported_op_is_named():
    # Unique has no TensorRT parser implementation
    m = graph([helper.make_node("Unique", ["x"], ["y"], name="dedupe_tokens", sorted=1)],
              outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    report = lint_onnx(m, TRT)
    assert not report.ok
    assert report.issues[0]["node"] == "dedupe_tokens" and report.issues[0]["op"] == "Unique"
    assert "not supported by TensorRT" in report.summary()


def test_op_newer_than_the_targets_tensorrt_is_named():
    old = load_target("jetson-orin-nano-int8")
    old.tensorrt_version = "8.6"
    m = graph([helper.make_node("Gelu", ["x"], ["y"], name="mlp_act")], opset=20)
    issue = lint_onnx(m, old).issues[0]
    assert issue["node"] == "mlp_act" and "needs TensorRT >= 10.0" in issue["problem"]
    assert lint_onnx(m, TRT).ok


def test_custom_domain_int64_io_dynamic_shape_and_opset_are_caught():
    m = graph([helper.make_node("FusedGemm", ["x"], ["y"], name="ms_gemm", domain="com.microsoft")], domains=["com.microsoft"])
    assert "custom-domain" in lint_onnx(m, TRT).issues[0]["problem"]

    m = graph([helper.make_node("Identity", ["x"], ["y"], name="id")],
              inputs=[helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])],
              outputs=[helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])])
    assert {i["node"] for i in lint_onnx(m, TRT).issues} == {"x", "y"}

    m = graph([helper.make_node("Relu", ["x"], ["y"], name="act")],
              inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
              outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    assert "dynamic" in lint_onnx(m, TRT).issues[0]["problem"]

    m = graph([helper.make_node("Relu", ["x"], ["y"], name="act")], opset=21)
    assert "opset 21 outside" in lint_onnx(m, TRT).issues[0]["problem"]


def test_asymmetric_qdq_is_caught():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.uint8), "zp")  # uint8 with offset: what TensorRT refuses
    m = graph([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q_in"),
               helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq_in")], inits=[scale, zp])
    issues = lint_onnx(m, TRT).issues
    assert [i["node"] for i in issues] == ["q_in", "dq_in"] and "signed symmetric" in issues[0]["problem"]


def test_onnxruntime_target_skips_the_op_table_but_keeps_structural_checks():
    cpu = load_target("cpu-onnx-fp32")
    m = graph([helper.make_node("Unique", ["x"], ["y"], name="u")], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    assert lint_onnx(m, cpu).ok


def test_op_table_covers_what_the_gmm_exports():
    table = op_table()
    for op in ("Conv", "MatMul", "Gemm", "LayerNormalization", "Softmax", "Erf", "Where", "GatherND", "QuantizeLinear", "DequantizeLinear", "Log"):
        assert op in table, op
    assert "Unique" not in table
