"""TensorRT runner: builds (or loads the cached) engine from the bundle's ONNX, runs it with execute_async_v3
on device buffers fed from pinned host buffers. TensorRT and cuda-python are imported inside `activate()`;
without them the runner says what is missing. Works with TensorRT 8.5 .. 11.x (tensor-name I/O, memory pools);
where their Python APIs differ is one table, `trt_plan.TRT_APIS`; older TensorRT (8.2, JetPack 4) is refused.

Activation either completes or releases everything it took (stream, device and pinned buffers), and checks
the engine's I/O names, dtypes and shapes against the manifest before any buffer exists.

The build *plan* (flags, DLA, workspace, cache key, trtexec line) is the pure `trt_plan.plan_for_bundle`.
Engines and timing caches cannot be signed (they are built here), so each is hashed into the device's engine
record when written (`Bundle.record_engine`) and read back only while it matches: a planted or changed file is
never deserialized, it is rebuilt from the verified ONNX.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

from edge_gmm.errors import BundleError, DeviceError, MissingDependencyError
from edge_gmm.runtime.runners.base import Runner
from edge_gmm.runtime.runners.trt_plan import TESTED_BELOW, GpuInfo, TrtBuildPlan, plan_for_bundle, trt_api, trt_version

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
    trt_api(trt.__version__)  # refuses TensorRT below 8.5 before any call into it
    if trt_version(trt.__version__) >= TESTED_BELOW:
        log.warning("TensorRT %s is newer than the versions this runner was written for (< %d): using the %d.x API",
                    trt.__version__, TESTED_BELOW[0], TESTED_BELOW[0] - 1)
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
    for name in plan.network_flags:  # EXPLICIT_BATCH on 8.x, STRONGLY_TYPED on 11 (trt_plan.TRT_APIS)
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
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
    if not plan.strongly_typed:  # a strongly typed network takes no layer precisions (TensorRT 11 has none)
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


def ensure_engine(trt, cudart, bundle, *, precision: str, target=None, profile=None, rebuild: bool = False,
                  graph: str | None = None):
    """(plan, engine bytes): the cached engine for this GPU/TensorRT/precision (and graph: the whole-window one,
    or one of the streaming split), built when absent or not one this device recorded building (planted or changed)."""
    plan = plan_for_bundle(bundle, live_gpu_info(trt, cudart), precision=precision, target=target, profile=profile,
                           graph=graph)
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


def engine_io(trt, engine) -> dict:
    """{name: (is_input, shape, numpy dtype)} of an engine's I/O tensors, in the engine's order."""
    io = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype))
        except TypeError:  # bf16, fp8, int4: no numpy type, and no manifest dtype either
            raise BundleError(f"engine tensor {name!r} has type {trt_dtype}, which the runner cannot feed or read") from None
        io[name] = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT, tuple(int(d) for d in engine.get_tensor_shape(name)), dtype)
    return io


def check_engine_io(io: dict, inputs, outputs, where) -> None:
    """BundleError listing every difference between the engine's I/O and the manifest's (names, sides,
    shapes, dtypes): a mismatch would otherwise copy the wrong number of bytes."""
    problems = []
    for side, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            got = io.get(spec.name)
            if got is None:
                problems.append(f"{side} {spec.name!r} is not an engine tensor")
                continue
            is_input, shape, dtype = got
            if is_input != (side == "input"):
                problems.append(f"{spec.name!r} is an engine {'input' if is_input else 'output'}, the manifest's {side}")
            if shape != spec.shape:
                problems.append(f"{side} {spec.name!r} has shape {shape} in the engine, {spec.shape} in the manifest")
            if dtype != np.dtype(spec.dtype):
                problems.append(f"{side} {spec.name!r} has dtype {dtype} in the engine, {spec.dtype} in the manifest")
    known = {s.name for s in [*inputs, *outputs]}
    problems += [f"engine tensor {n!r} is not in the manifest" for n in io if n not in known]
    if problems:
        raise BundleError(f"{where}: the engine's I/O does not match the bundle's manifest: {'; '.join(problems)}",
                          hint="the bundle's ONNX and manifest disagree (a dynamic or fp16-I/O graph?): export it again")


def _pinned_array(ptr: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A numpy view of pinned host memory (owned by the runner: freed with cudaFreeHost in _release)."""
    n = int(np.prod(shape))
    raw = (ctypes.c_ubyte * max(n * dtype.itemsize, 1)).from_address(int(ptr))
    return np.frombuffer(raw, dtype=dtype, count=n).reshape(shape)


def _free(cudart, ret, what: str) -> None:
    err = ret[0] if isinstance(ret, tuple) else ret
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        log.warning("freeing the %s failed (CUDA error %s); continuing the teardown", what, int(err))


class TensorRTRunner(Runner):
    name = "tensorrt"
    needs_artifact = False  # below TensorRT 11, fp16 engines come from the FP32 ONNX (trt_plan picks the source)

    def default_precision(self) -> str:
        return self.bundle.manifest.get("target", {}).get("precision") or self.bundle.default_precision()

    def __init__(self, bundle, *, precision=None, graph=None, device: int = 0, target=None, profile=None,
                 rebuild: bool = False):
        super().__init__(bundle, precision=precision, graph=graph)
        self.device, self.target, self.profile, self.rebuild = device, target, profile, rebuild
        self.plan: TrtBuildPlan | None = None

    def _activate_impl(self) -> None:
        trt, cudart = import_tensorrt()
        self._trt, self._cudart = trt, cudart
        self._runtime = self._engine = self._context = self._stream = None
        self._device_ptrs: dict[str, int] = {}
        self._pinned_ptrs: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}  # pinned host arrays, one per I/O tensor
        try:
            self._start(trt, cudart)
        except BaseException:
            self._release()  # failed half-way: give back what was taken before reporting it
            raise

    def _start(self, trt, cudart) -> None:
        _cuda_call(cudart, cudart.cudaSetDevice(self.device))
        self.plan, data = ensure_engine(trt, cudart, self.bundle, precision=self.precision, target=self.target,
                                        profile=self.profile, rebuild=self.rebuild, graph=self.graph.name)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if self.plan.dla_core >= 0:
            self._runtime.DLA_core = self.plan.dla_core
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BundleError(f"{self.plan.engine_path}: TensorRT could not load this engine", hint="rebuild it: edge-gmm engine build BUNDLE --rebuild")
        io = engine_io(trt, self._engine)
        check_engine_io(io, self.inputs, self.outputs, self.plan.engine_path)  # before any buffer or copy
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise DeviceError("TensorRT could not create an execution context (GPU memory exhausted?)")
        self._stream = _cuda_call(cudart, cudart.cudaStreamCreate())
        for name, (_, shape, dtype) in io.items():
            self._bind(name, shape, dtype)
        self._input_names = [n for n, t in io.items() if t[0]]
        self._output_names = [n for n, t in io.items() if not t[0]]

    def _bind(self, name: str, shape: tuple, dtype: np.dtype) -> None:
        """A device buffer and a pinned host buffer for one tensor; each is recorded as soon as it exists."""
        cudart = self._cudart
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self._device_ptrs[name] = _cuda_call(cudart, cudart.cudaMalloc(max(nbytes, 1)))
        # pinned (page-locked): cudaMemcpyAsync from pageable memory is staged and not truly async
        self._pinned_ptrs[name] = _cuda_call(cudart, cudart.cudaMallocHost(max(nbytes, 1)))
        self._host[name] = _pinned_array(self._pinned_ptrs[name], shape, dtype)
        if not self._context.set_tensor_address(name, int(self._device_ptrs[name])):
            raise DeviceError(f"TensorRT refused the device address of tensor {name!r}")

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, stream = self._cudart, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._input_names:
            host = self._host[name]
            np.copyto(host, feed[name])  # into pinned memory, which outlives the async copy
            _cuda_call(cudart, cudart.cudaMemcpyAsync(self._device_ptrs[name], self._pinned_ptrs[name], host.nbytes, h2d, stream))
        if not self._context.execute_async_v3(stream):
            raise DeviceError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name in self._output_names:
            _cuda_call(cudart, cudart.cudaMemcpyAsync(self._pinned_ptrs[name], self._device_ptrs[name], self._host[name].nbytes, d2h, stream))
        _cuda_call(cudart, cudart.cudaStreamSynchronize(stream))
        return {name: self._host[name].copy() for name in self._output_names}  # copies: the next call overwrites

    def _deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Drop TensorRT objects (context before engine before runtime), then free buffers and the stream. A
        failure here is logged, not raised: it must not hide the error that started the teardown."""
        cudart = self._cudart
        self._context = self._engine = self._runtime = None
        self._host = {}
        for name, ptr in self._pinned_ptrs.items():
            _free(cudart, cudart.cudaFreeHost(ptr), f"pinned buffer {name!r}")
        for name, ptr in self._device_ptrs.items():
            _free(cudart, cudart.cudaFree(ptr), f"device buffer {name!r}")
        if self._stream is not None:
            _free(cudart, cudart.cudaStreamDestroy(self._stream), "CUDA stream")
        self._pinned_ptrs, self._device_ptrs, self._stream = {}, {}, None

    def describe(self) -> dict:
        d = super().describe()
        if self.plan is not None:
            d.update(engine=str(self.plan.engine_path), flags=list(self.plan.flags), dla_core=self.plan.dla_core)
        return d
