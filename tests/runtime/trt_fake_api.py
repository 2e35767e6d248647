"""A stand-in for the TensorRT Python API of one version (8.2, 8.5, 10.x, 11.x) and for cuda-python's runtime.

TensorRT cannot be installed here (FIELD-NOTES), so the runner's API-calling code is driven against this.
Each version exposes only what that release's Python bindings have (API_RANGES, read from NVIDIA/TensorRT's
release/8.5, 10.3 and 11.1 python/src): calling an API of the wrong version raises AttributeError, as the real
module would. Engines "run" with onnxruntime on the ONNX they were built from; "device" and "pinned" memory
are numpy buffers moved with ctypes.memmove, tracked so a test sees every leak. `fail={call: n}` makes the
n-th call of a CUDA or TensorRT step fail, to test teardown half-way through activation.
This proves the runner's logic and that its calls exist in each version; not that TensorRT accepts them.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types

import numpy as np

# (owner, attribute): [since, until) TensorRT versions whose Python bindings have it; absent = every version
API_RANGES = {
    ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"): (None, (11, 0)),  # deprecated no-op in 10
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"): ((9, 0), None),  # deprecated no-op in 11
    ("BuilderFlag", "FP16"): (None, (11, 0)),
    ("BuilderFlag", "INT8"): (None, (11, 0)),
    ("BuilderFlag", "OBEY_PRECISION_CONSTRAINTS"): (None, (11, 0)),
    ("MemoryPoolType", "WORKSPACE"): ((8, 4), None),
    ("Config", "set_memory_pool_limit"): ((8, 4), None),
    ("Config", "max_workspace_size"): (None, (10, 0)),
    ("Builder", "build_engine"): (None, (10, 0)),
    ("Engine", "num_io_tensors"): ((8, 5), None),
    ("Engine", "get_tensor_name"): ((8, 5), None),
    ("Engine", "get_tensor_mode"): ((8, 5), None),
    ("Engine", "get_tensor_shape"): ((8, 5), None),
    ("Engine", "get_tensor_dtype"): ((8, 5), None),
    ("Engine", "num_bindings"): (None, (10, 0)),
    ("Engine", "get_binding_shape"): (None, (10, 0)),
    ("Context", "set_tensor_address"): ((8, 5), None),
    ("Context", "execute_async_v3"): ((8, 5), None),
    ("Context", "execute_async_v2"): (None, (10, 0)),
    ("Layer", "precision"): (None, (11, 0)),  # strongly typed only in 11: no layer precisions
    ("Layer", "set_output_type"): (None, (11, 0)),
}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int32)": "int32", "tensor(bool)": "bool"}


class FakeState:
    """What the fakes saw: builds, live allocations (device, pinned, streams), the call log, failures to inject."""

    def __init__(self, fail=None):
        self.calls: list[dict] = []  # one per engine build
        self.memory: dict = {}  # live: pointer -> ("device" | "pinned", buffer); stream handle -> "stream"
        self.log: list = []  # CUDA calls in order; copies as ("copy", "pinned->device")
        self.fail = dict(fail or {})
        self.seen: dict[str, int] = {}

    def failing(self, step: str) -> bool:
        self.seen[step] = self.seen.get(step, 0) + 1
        return self.fail.get(step) == self.seen[step]


def _version(v: str) -> tuple[int, int]:
    major, minor = (v.split(".") + ["0"])[:2]
    return int(major), int(minor)


def _prune(version: tuple[int, int], owners: dict) -> None:
    """Delete from each fake class/enum what this TensorRT version's bindings lack."""
    for (owner, attr), (since, until) in API_RANGES.items():
        if (since and version < since) or (until and version >= until):
            delattr(owners[owner], attr)


def fake_tensorrt(state: FakeState, version: str = "10.3.0"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    v = _version(version)
    trt.float32, trt.float16, trt.int32, trt.bool = "float32", "float16", "int32", "bool"
    trt.nptype = lambda dt: np.dtype(dt).type
    trt.Logger = type("Logger", (), {"WARNING": 2, "ERROR": 1, "__init__": lambda self, level=2: None})
    # real enum values: STRONGLY_TYPED is 1 beside EXPLICIT_BATCH (9.x, 10.x), 0 once EXPLICIT_BATCH is gone (11)
    flags_ns = type("NetworkDefinitionCreationFlag", (), {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 0 if v >= (11, 0) else 1})
    builder_flags = type("BuilderFlag", (), {n: n for n in ("FP16", "INT8", "GPU_FALLBACK", "OBEY_PRECISION_CONSTRAINTS")})
    pools = type("MemoryPoolType", (), {"WORKSPACE": "workspace"})
    trt.NetworkDefinitionCreationFlag, trt.BuilderFlag, trt.MemoryPoolType = flags_ns, builder_flags, pools
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    explicit_batch_only = v >= (10, 0)

    class Layer:
        __slots__ = ("name", "num_outputs", "_precision", "out_types", "strongly_typed")

        def __init__(self, name, strongly_typed):
            self.name, self.num_outputs, self._precision, self.out_types = name, 1, None, {}
            self.strongly_typed = strongly_typed

        def get_output(self, j):
            return types.SimpleNamespace(dtype=trt.float32)

        def _weakly_typed(self):
            if self.strongly_typed:  # TensorRT 10 with STRONGLY_TYPED refuses per-layer types too
                raise RuntimeError("setting a layer precision is not allowed in a strongly typed network")

        def _set_precision(self, dt):
            self._weakly_typed()
            self._precision = dt

        precision = property(lambda self: self._precision, _set_precision)

        def set_output_type(self, j, dt):
            self._weakly_typed()
            self.out_types[j] = dt

    class Network:
        def __init__(self, flags):
            self.flags, self.layers, self.onnx = flags, [], None
            self.explicit_batch = explicit_batch_only or bool(flags & (1 << flags_ns.EXPLICIT_BATCH))
            st = getattr(flags_ns, "STRONGLY_TYPED", None)
            self.strongly_typed = v >= (11, 0) or (st is not None and bool(flags & (1 << st)))

        num_layers = property(lambda self: len(self.layers))

        def get_layer(self, i):
            return self.layers[i]

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            import onnx

            if not self.network.explicit_batch:  # TensorRT 8.x: the ONNX parser needs an explicit-batch network
                self.errors.append(ParserError("network must have explicit batch dimensions"))
                return False
            self.network.onnx = path
            self.network.layers = [Layer(n.name, self.network.strongly_typed) for n in onnx.load(path).graph.node]
            return True

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+timings"

    class Config:
        def __init__(self):
            self.flags, self.pool, self.default_device_type, self.DLA_core, self.cache = [], {}, "GPU", -1, None

        def set_memory_pool_limit(self, pool, n):
            self.pool[pool] = n

        max_workspace_size = property(lambda self: self.pool.get("workspace", 0), lambda self, n: self.pool.__setitem__("workspace", n))

        def set_flag(self, f):
            self.flags.append(f)

        def create_timing_cache(self, data):
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            pinned = [layer.name for layer in network.layers if layer._precision == trt.float32 and layer.out_types]
            state.calls.append({"flags": config.flags, "pool": config.pool, "pinned": pinned, "device": config.default_device_type,
                                "network_flags": network.flags, "onnx": network.onnx})
            return json.dumps({"onnx": network.onnx}).encode()

        def build_engine(self, network, config):
            raise AssertionError("the runner must not call the deprecated build_engine")

    class Context:
        def __init__(self, engine):
            self.engine, self.addr = engine, {}

        def set_tensor_address(self, name, ptr):
            if state.failing("set_tensor_address"):
                return False
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            sess = self.engine.sess
            feed = {i.name: _read(self.addr[i.name], self.engine.shape(i.name), self.engine.dtype(i.name)) for i in sess.get_inputs()}
            for o, val in zip(sess.get_outputs(), sess.run(None, feed)):
                val = np.ascontiguousarray(val, self.engine.dtype(o.name))
                ctypes.memmove(self.addr[o.name], val.ctypes.data, val.nbytes)
            return True

        def execute_async_v2(self, bindings, stream_handle):
            raise AssertionError("the runner must use execute_async_v3")

    class Engine:
        def __init__(self, plan):
            import onnxruntime as ort

            self.sess = ort.InferenceSession(json.loads(plan)["onnx"], providers=["CPUExecutionProvider"])
            self.io = [(i.name, "in", tuple(i.shape), ORT_DTYPES[i.type]) for i in self.sess.get_inputs()] + \
                      [(o.name, "out", tuple(o.shape), ORT_DTYPES[o.type]) for o in self.sess.get_outputs()]

        num_io_tensors = property(lambda self: len(self.io))
        num_bindings = num_io_tensors

        def _get(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return self._get(name)[1]

        def get_tensor_shape(self, name):
            return self._get(name)[2]

        def get_binding_shape(self, i):
            return self.io[i][2]

        def get_tensor_dtype(self, name):
            return self._get(name)[3]

        shape, dtype = get_tensor_shape, get_tensor_dtype

        def create_execution_context(self):
            return None if state.failing("create_execution_context") else Context(self)

    class Runtime:
        DLA_core = -1

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None if state.failing("deserialize_cuda_engine") else Engine(data)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    # the real module's class names, so a test can look an API up as a user would
    trt.IBuilderConfig, trt.ICudaEngine, trt.IExecutionContext, trt.ILayer = Config, Engine, Context, Layer
    _prune(v, {"NetworkDefinitionCreationFlag": flags_ns, "BuilderFlag": builder_flags, "MemoryPoolType": pools,
               "Config": Config, "Builder": Builder, "Engine": Engine, "Context": Context, "Layer": Layer})
    return trt


def _read(ptr, shape, dtype):
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = (ctypes.c_ubyte * n).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def fake_cudart(state: FakeState):
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaGetErrorString = lambda err: (0, b"fake error")
    rt.cudaGetDeviceProperties = lambda i: (0, types.SimpleNamespace(name=b"FakeGPU", major=8, minor=7))
    streams = iter(range(1, 1000))

    def step(name, ok):
        """Log the call; a failing one returns CUDA error 2 (cudaErrorMemoryAllocation) and takes nothing."""
        state.log.append(name)
        return (2,) if state.failing(name) else ok()

    def alloc(kind, n):
        def take():
            buf = np.zeros(n, np.uint8)
            state.memory[buf.ctypes.data] = (kind, buf)
            return 0, buf.ctypes.data
        return take

    def stream():
        s = next(streams)
        state.memory[s] = "stream"
        return 0, s

    def release(ptr, kind):
        entry = state.memory.get(ptr)
        if entry is None or (entry if kind == "stream" else entry[0]) != kind:
            return (1,)  # cudaErrorInvalidValue: not a live allocation of that kind
        del state.memory[ptr]
        return (0,)

    def memcpy(dst, src, n, kind, stream_handle):
        state.log.append(("copy", f"{_kind(state, src)}->{_kind(state, dst)}"))
        ctypes.memmove(dst, src, n)
        return (0,)

    rt.cudaSetDevice = lambda i: step("cudaSetDevice", lambda: (0,))
    rt.cudaStreamCreate = lambda: step("cudaStreamCreate", stream)
    rt.cudaMalloc = lambda n: step("cudaMalloc", alloc("device", n))
    rt.cudaMallocHost = lambda n: step("cudaMallocHost", alloc("pinned", n))
    rt.cudaFree = lambda p: release(p, "device")
    rt.cudaFreeHost = lambda p: release(p, "pinned")
    rt.cudaStreamDestroy = lambda s: release(s, "stream")
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaMemcpyAsync = memcpy
    return rt


def _kind(state, ptr):
    entry = state.memory.get(ptr)
    return entry[0] if isinstance(entry, tuple) else "pageable"


def install_fakes(monkeypatch, version: str = "10.3.0", fail=None) -> FakeState:
    """Put fake `tensorrt` and `cuda.bindings.runtime` modules in sys.modules for one test."""
    state = FakeState(fail)
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    rt = fake_cudart(state)
    bindings.runtime, cuda.bindings = rt, bindings
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(state, version))
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    return state
