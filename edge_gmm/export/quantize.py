"""INT8 quantizers by name: `ort` (default, onnxruntime), `modelopt` (NVIDIA Model Optimizer), `optimum`.

All three write signed symmetric QDQ (what TensorRT's explicit quantization takes: int8, zero point 0),
per-channel weights, calibrated on training windows, with nodes matching `fp32_layers` (the log-mel
frontend) left FP32. The optional ones import their package only when chosen and, absent, name the extra.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx

from edge_gmm.errors import MissingDependencyError
from edge_gmm.registry import Registry

Feeds = Callable[[], Iterable[dict[str, np.ndarray]]]  # a fresh iterator of ONNX feeds per call

QUANTIZERS: Registry[Callable] = Registry("quantizer")
# quantize the inputs of weighted ops only: TensorRT fuses Q/DQ into these, elsewhere QDQ only costs accuracy
OPS_TO_QUANTIZE = ["Conv", "MatMul", "Gemm"]


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def excluded_nodes(model_path: str | Path, patterns) -> list[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if any(p in n.name for p in patterns)]


@QUANTIZERS.register("ort")
def quantize_ort(src: Path, dst: Path, calibration: Feeds, exclude: list[str]) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration())

        def get_next(self):
            return next(self._it, None)

    with _quiet_root_logger():  # onnxruntime.quantization logs advice through the root logger
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=OPS_TO_QUANTIZE,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            # bias stays float: TensorRT's DequantizeLinear takes int8 only, and fuses the float bias itself
            # and no Q/DQ on their outputs: the next op's input quantization is what TensorRT fuses, and requantizing
        # the logits themselves flipped near-tie windows (top-1 agreement 96.3% -> 98.1% on one run)
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "OpTypesToExcludeOutputQuantization": OPS_TO_QUANTIZE},
        )
    return {"quantizer": "ort", "calibration": "minmax", "symmetric": True, "per_channel": True}


@QUANTIZERS.register("modelopt")
def quantize_modelopt(src: Path, dst: Path, calibration: Feeds, exclude: list[str]) -> dict:
    try:
        from modelopt.onnx.quantization import quantize as mo_quantize
    except ImportError:
        raise MissingDependencyError(
            "--quantizer modelopt needs NVIDIA Model Optimizer",
            hint="pip install 'edge-gmm[modelopt]' in a separate virtualenv (it replaces onnxruntime with onnxruntime-gpu)",
        ) from None
    feeds = list(calibration())
    calib = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    mo_quantize(
        onnx_path=str(src),
        quantize_mode="int8",
        calibration_data=calib,
        calibration_method="max",
        calibration_eps=["cpu"],
        nodes_to_exclude=[f"^{n}$" for n in exclude] or None,
        high_precision_dtype="fp32",  # the defaults turn the rest into fp16 and force opset 19 (FIELD-NOTES)
        output_path=str(dst),
    )
    return {"quantizer": "modelopt", "calibration": "max", "symmetric": True, "per_channel": True}


@QUANTIZERS.register("optimum")
def quantize_optimum(src: Path, dst: Path, calibration: Feeds, exclude: list[str]) -> dict:
    try:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoCalibrationConfig, QuantizationConfig
    except ImportError:
        raise MissingDependencyError("--quantizer optimum needs optimum[onnxruntime]", hint="pip install 'edge-gmm[optimum]'") from None
    from onnxruntime.quantization import QuantFormat, QuantizationMode, QuantType

    try:
        from datasets import Dataset
    except ImportError:
        raise MissingDependencyError("--quantizer optimum needs 'datasets<4.1'", hint="pip install 'edge-gmm[optimum]'") from None
    feeds = list(calibration())
    ds = Dataset.from_dict({k: [f[k][0] for f in feeds] for k in feeds[0]})
    # not AutoQuantizationConfig: its presets use asymmetric uint8 activations, wrong for TensorRT (FIELD-NOTES)
    qconfig = QuantizationConfig(
        is_static=True,
        format=QuantFormat.QDQ,
        mode=QuantizationMode.QLinearOps,
        activations_dtype=QuantType.QInt8,
        activations_symmetric=True,
        weights_dtype=QuantType.QInt8,
        weights_symmetric=True,
        per_channel=True,
        operators_to_quantize=OPS_TO_QUANTIZE,
        nodes_to_exclude=exclude,
    )
    quantizer = ORTQuantizer.from_pretrained(str(src.parent), file_name=src.name)
    ranges = quantizer.fit(dataset=ds, calibration_config=AutoCalibrationConfig.minmax(ds), batch_size=1)
    out_dir = dst.parent / "optimum-out"
    quantizer.quantize(save_dir=str(out_dir), quantization_config=qconfig, calibration_tensors_range=ranges)
    produced = sorted(out_dir.glob("*.onnx"))[0]
    produced.replace(dst)
    return {"quantizer": "optimum", "calibration": "minmax", "symmetric": True, "per_channel": True}


# quantizer -> (module to import, extra that provides it): checked before minutes of export work are spent
OPTIONAL = {"modelopt": ("modelopt.onnx.quantization", "edge-gmm[modelopt]"), "optimum": ("optimum.onnxruntime", "edge-gmm[optimum]")}


def ensure_available(name: str) -> None:
    QUANTIZERS.get(name)  # unknown name -> ConfigError listing the quantizers
    if name in OPTIONAL:
        import importlib.util

        module, extra = OPTIONAL[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if not found:
            raise MissingDependencyError(f"--quantizer {name} needs {module.split('.')[0]}, not installed here",
                                         hint=f"pip install '{extra}' (in its own virtualenv for modelopt: it replaces onnxruntime)")


def quantize(name: str, src: Path, dst: Path, calibration: Feeds, fp32_patterns) -> dict:
    """Run quantizer `name`; returns what it did (recorded in the manifest)."""
    exclude = excluded_nodes(src, fp32_patterns)
    info = QUANTIZERS.get(name)(Path(src), Path(dst), calibration, exclude)
    info["fp32_nodes"] = exclude
    return info
