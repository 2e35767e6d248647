"""ONNX Runtime runner: CPU always; CUDA and TensorRT execution providers when this onnxruntime has them."""

from __future__ import annotations

import numpy as np

from edge_gmm.errors import BundleError, ConfigError, DeviceError, MissingDependencyError
from edge_gmm.runtime.runners.base import Runner

# provider short names -> ORT provider ids, in the order "auto" prefers them
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# ORT's exception types for a session that failed on the device (EP init, CUDA/TensorRT, allocation), as
# opposed to Fail/InvalidProtobuf/InvalidGraph/NoSuchFile: a file that will not load
DEVICE_FAULTS = ("RuntimeException", "EPFail", "EngineError")


class OnnxRuntimeRunner(Runner):
    name = "onnxrt"

    def __init__(self, bundle, *, precision=None, graph=None, provider: str = "cpu", threads: int = 0):
        super().__init__(bundle, precision=precision, graph=graph)
        if provider != "auto" and provider not in PROVIDERS:
            raise ConfigError(f"onnxrt runner: unknown provider {provider!r}; choose auto or one of {', '.join(PROVIDERS)}")
        self.provider = provider
        self.threads = threads
        self.session = None

    def _activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("the onnxrt runner needs onnxruntime", hint="pip install 'edge-gmm[device]'") from None
        available = ort.get_available_providers()
        if self.provider == "auto":
            providers = [p for p in PROVIDERS.values() if p in available]
        else:
            wanted = PROVIDERS[self.provider]
            if wanted not in available:
                raise MissingDependencyError(
                    f"onnxruntime here has no {wanted} (available: {', '.join(available)})",
                    hint="install onnxruntime-gpu for CUDA/TensorRT providers, or use --provider cpu",
                )
            providers = [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        path = self.graph.artifact_path(self.precision)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:
            first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            if type(e).__name__ in DEVICE_FAULTS or isinstance(e, MemoryError):  # the machine, not the file
                raise DeviceError(f"onnxruntime could not start a session for {path.name}: {first}") from None
            raise BundleError(f"{path}: onnxruntime cannot load this model: {first}",
                              hint="re-export the bundle with 'edge-gmm export'") from None
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run raises; ORT's own line per failure would flood the log

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self._output_names, feed, self._run_options)
        return dict(zip(self._output_names, values))

    def _deactivate_impl(self) -> None:
        self.session = None

    def describe(self) -> dict:
        d = super().describe()
        d.update(provider=self.provider, threads=self.threads or "default")
        if self.session is not None:
            d["providers"] = self.session.get_providers()
        return d
