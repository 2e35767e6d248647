"""Runners by name (STYLE.md #2): `create_runner("onnxrt" | "tensorrt" | "torch", bundle, precision=..., **options)`.

Each backend module imports its engine (onnxruntime, tensorrt + cuda-python, torch) only inside `activate()`,
so listing or constructing a runner never pulls anything heavy.
"""

from __future__ import annotations

from edge_gmm.registry import Registry
from edge_gmm.runtime.runners.base import Runner
from edge_gmm.runtime.runners.onnxrt import OnnxRuntimeRunner
from edge_gmm.runtime.runners.tensorrt import TensorRTRunner
from edge_gmm.runtime.runners.torch_runner import TorchRunner

RUNNERS: Registry[type[Runner]] = Registry("runner")
RUNNERS.add("onnxrt", OnnxRuntimeRunner)
RUNNERS.add("tensorrt", TensorRTRunner)
RUNNERS.add("torch", TorchRunner)


def create_runner(name: str, bundle, *, precision: str | None = None, **options) -> Runner:
    return RUNNERS.get(name)(bundle, precision=precision, **options)


__all__ = ["RUNNERS", "Runner", "create_runner"]
