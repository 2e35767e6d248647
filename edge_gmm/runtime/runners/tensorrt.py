"""TensorRT runner: builds (or loads the cached) engine from the bundle's ONNX, runs it with execute_async_v3
on device buffers. TensorRT and cuda-python are imported inside `activate()`; without them the runner says
what is missing. Written against the TensorRT 8.6 / 10.x Python API (tensor-name I/O, memory pools).

The build *plan* (flags, DLA, workspace, cache key, trtexec line) is the pure `trt_plan.plan_for_bundle`.
Engines and timing caches cannot be signed (they are built here), so each is hashed into the device's engine
record when written (`Bundle.record_engine`) and read back only while it matches: a planted or changed file is
never deserialized, it is rebuilt from the verified ONNX.
"""

from __future__ import annotations

import logging

import numpy as np

from edge_gmm.errors import BundleError, DeviceError, MissingDependencyError
from edge_gmm.runtime.runners.base import Runner
from edge_gmm.runtime.runners.trt_plan import GpuInfo, TrtBuildPlan, plan_for_bundle

log = logging.getLogger("edge_gmm.runtime.tensorrt")

MISSING_HINT = (
    "on a Jetson, TensorRT and cuda-python come with JetPack (apt install python3-libnvinfer, pip install cuda-python); "
    "on an x86 CUDA box: pip install 'edge-gmm[tensorrt]' cuda-python; or use the onnxrt runner"
)


def import_tensorrt():
    """(tensorrt, cudart) or MissingDependencyError naming what is absent."""
    missing = []
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
        missing.append("tensorrt")
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            cudart = None
            missing.append("cuda-python")
    if missing:
        raise MissingDependencyError(f"the tensorrt runner needs {' and '.join(missing)}, not installed here", hint=MISSING_HINT)
    return trt, cudart


def _cuda_call(cudart, ret):
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *values = ret if isinstance(ret, tuple) else (ret,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        raise DeviceError(f"CUDA call failed: {cudart.cudaGetErrorString(err)[1]!r}")
    return values[0] if len(values) == 1 else values


def live_gpu_info(trt, cudart, device: int = 0) -> GpuInfo:
    props = _cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    return GpuInfo(name.strip("\x00 "), f"{props.major}.{props.minor}", trt.__version__, int(builder.num_DLA_cores))


def build_engine(trt, plan: TrtBuildPlan, logger=None, *, timing_cache: bytes = b"") -> bytes:
    """Parse the ONNX, apply the plan, build and return the serialized engine; writes the timing cache file.

    `timing_cache`: the previous cache's bytes, which the caller has checked against the engine record."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    major = int(trt.__version__.split(".")[0])
    if major < 10:  # TensorRT 8.x needs explicit batch spelled out; 10.x has only explicit batch
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise BundleError(f"{plan.onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors) or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.dla_core >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    _pin_fp32_layers(trt, network, plan.fp32_layers)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeviceError(f"TensorRT could not build an engine from {plan.onnx_path} (see the TensorRT log above)")
    plan.timing_cache.parent.mkdir(parents=True, exist_ok=True)
    plan.timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _pin_fp32_layers(trt, network, patterns) -> int:
    """Force layers whose names contain a pattern (log-mel) to compute and output FP32."""
    pinned = 0
    if not patterns:
        return 0
    floats = (trt.float32, trt.float16)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not any(p in layer.name for p in patterns):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outs or any(o.dtype not in floats for o in outs):
            continue  # shape/int layers carry no precision choice
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def ensure_engine(trt, cudart, bundle, *, precision: str, target=None, profile=None, rebuild: bool = False):
    """(plan, engine bytes): the cached engine for this GPU/TensorRT/precision, built when absent or not one
    this device recorded building (planted or changed)."""
    plan = plan_for_bundle(bundle, live_gpu_info(trt, cudart), precision=precision, target=target, profile=profile)
    if plan.engine_path.is_file() and not rebuild:
        data = plan.engine_path.read_bytes()
        if bundle.engine_trusted(plan.engine_path, data):  # checks the bytes read, so nothing can swap them after
            return plan, data
        log.warning("%s: not an engine this device recorded building (planted or changed): rebuilding it", plan.engine_path)
    data = build_engine(trt, plan, timing_cache=_trusted_bytes(bundle, plan.timing_cache))
    plan.engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.engine_path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(plan.engine_path)  # atomic: a half-written engine is never picked up
    bundle.record_engine(plan.engine_path, plan.timing_cache)
    (plan.engine_path.with_suffix(".trtexec.sh")).write_text("#!/bin/sh\n# the same build with trtexec\n" + plan.trtexec_line() + "\n")
    return plan, data


def _trusted_bytes(bundle, path) -> bytes:
    """A cache file's bytes when this device recorded writing them, else nothing (a planted cache is ignored)."""
    if not path.is_file():
        return b""
    data = path.read_bytes()
    if bundle.engine_trusted(path, data):
        return data
    log.warning("%s: not a timing cache this device recorded writing: building without it", path)
    return b""


class TensorRTRunner(Runner):
    name = "tensorrt"
    needs_artifact = False  # fp16 engines come from the FP32 ONNX (see trt_plan)

    def default_precision(self) -> str:
        return self.bundle.manifest.get("target", {}).get("precision") or self.bundle.default_precision()

    def __init__(self, bundle, *, precision=None, device: int = 0, target=None, profile=None, rebuild: bool = False):
        super().__init__(bundle, precision=precision)
        self.device, self.target, self.profile, self.rebuild = device, target, profile, rebuild
        self.plan: TrtBuildPlan | None = None

    def _activate_impl(self) -> None:
        trt, cudart = import_tensorrt()
        self._trt, self._cudart = trt, cudart
        _cuda_call(cudart, cudart.cudaSetDevice(self.device))
        self.plan, data = ensure_engine(trt, cudart, self.bundle, precision=self.precision, target=self.target, profile=self.profile, rebuild=self.rebuild)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if self.plan.dla_core >= 0:
            self._runtime.DLA_core = self.plan.dla_core
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BundleError(f"{self.plan.engine_path}: TensorRT could not load this engine", hint="rebuild it: edge-gmm engine build BUNDLE --rebuild")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda_call(cudart, cudart.cudaStreamCreate())
        self._device_ptrs: dict[str, int] = {}
        self._host_out: dict[str, np.ndarray] = {}
        self._io_names: list[str] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            ptr = _cuda_call(cudart, cudart.cudaMalloc(max(nbytes, 1)))
            self._device_ptrs[name] = ptr
            self._context.set_tensor_address(name, int(ptr))
            self._io_names.append(name)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                self._host_out[name] = np.empty(shape, dtype=dtype)

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []  # contiguous copies must outlive the async copies
        for name, arr in feed.items():
            arr = np.ascontiguousarray(arr)
            keep.append(arr)
            _cuda_call(cudart, cudart.cudaMemcpyAsync(self._device_ptrs[name], arr.ctypes.data, arr.nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise DeviceError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name, host in self._host_out.items():
            _cuda_call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._device_ptrs[name], host.nbytes, d2h, self._stream))
        _cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream))
        return {name: host.copy() for name, host in self._host_out.items()}

    def _deactivate_impl(self) -> None:
        cudart = self._cudart
        for ptr in self._device_ptrs.values():
            cudart.cudaFree(ptr)
        cudart.cudaStreamDestroy(self._stream)
        self._context = self._engine = self._runtime = None
        self._device_ptrs, self._host_out = {}, {}

    def describe(self) -> dict:
        d = super().describe()
        if self.plan is not None:
            d.update(engine=str(self.plan.engine_path), flags=list(self.plan.flags), dla_core=self.plan.dla_core)
        return d
