"""The TensorRT runner's API-calling code (build, timing cache, precision pinning, engine cache, device
buffers, execute_async_v3) driven against a stand-in of the tensorrt and cuda-python modules.

TensorRT cannot be installed here (FIELD-NOTES), so this is the one place a fake is used: it implements
only the API surface the runner calls, "runs" engines with onnxruntime on the engine's ONNX, and keeps
"device memory" in numpy buffers moved with ctypes.memmove. It proves the runner's own logic and calls are
consistent; it does not prove TensorRT accepts them (that needs a Jetson or a CUDA box with TensorRT).
"""

import ctypes
import json
import sys
import types

import numpy as np
import pytest
from test_runtime_bundle import manifest_stub, tiny_onnx

from edge_gmm.config import ExportTarget
from edge_gmm.runtime.bundle import write_bundle
from edge_gmm.runtime.runners import create_runner


def fake_tensorrt(calls):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.float32, trt.float16, trt.int32 = "float32", "float16", "int32"
    trt.Logger = type("Logger", (), {"WARNING": 2, "ERROR": 1, "__init__": lambda self, level=2: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK", OBEY_PRECISION_CONSTRAINTS="OBEY")
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: np.float32

    class Layer:
        def __init__(self, name):
            self.name, self.precision, self.out_types, self.num_outputs = name, None, {}, 1

        def get_output(self, j):
            return types.SimpleNamespace(dtype=trt.float32)

        def set_output_type(self, j, dt):
            self.out_types[j] = dt

    class Network:
        layers = []
        num_layers = property(lambda self: len(self.layers))

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            import onnx

            self.network.onnx = path
            self.network.layers = [Layer(n.name) for n in onnx.load(path).graph.node]
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

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            pinned = [layer.name for layer in network.layers if layer.precision == trt.float32 and layer.out_types]
            calls.append({"flags": config.flags, "pool": config.pool, "pinned": pinned, "device": config.default_device_type})
            return json.dumps({"onnx": network.onnx}).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.addr = engine, {}

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            feed = {i.name: _read(self.addr[i.name], i.shape) for i in self.engine.sess.get_inputs()}
            for o, v in zip(self.engine.sess.get_outputs(), self.engine.sess.run(None, feed)):
                ctypes.memmove(self.addr[o.name], np.ascontiguousarray(v, np.float32).ctypes.data, v.nbytes)
            return True

    class Engine:
        def __init__(self, plan):
            import onnxruntime as ort

            self.sess = ort.InferenceSession(json.loads(plan)["onnx"], providers=["CPUExecutionProvider"])
            self.io = [(i.name, "in", tuple(i.shape)) for i in self.sess.get_inputs()] + \
                      [(o.name, "out", tuple(o.shape)) for o in self.sess.get_outputs()]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _get(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name):
            return self._get(name)[1]

        def get_tensor_shape(self, name):
            return self._get(name)[2]

        def get_tensor_dtype(self, name):
            return trt.float32

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        DLA_core = -1

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(data)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def _read(ptr, shape):
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape).copy()


def fake_cudart(memory):
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaGetErrorString = lambda err: (0, b"fake error")
    rt.cudaSetDevice = lambda i: (0,)
    rt.cudaGetDeviceProperties = lambda i: (0, types.SimpleNamespace(name=b"FakeGPU", major=8, minor=7))
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamSynchronize = rt.cudaStreamDestroy = lambda s: (0,)

    def malloc(n):
        buf = np.zeros(n, np.uint8)  # "device memory": a host buffer, kept alive here
        memory[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def memcpy(dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return (0,)

    rt.cudaMalloc, rt.cudaMemcpyAsync = malloc, memcpy
    rt.cudaFree = lambda p: (0,) if memory.pop(p, None) is not None else (1,)
    return rt


@pytest.fixture(autouse=True)
def device_home(tmp_path, monkeypatch):
    """The device's $EDGE_GMM_HOME, where engine records are kept (never the real ~/edge-gmm)."""
    monkeypatch.setenv("EDGE_GMM_HOME", str(tmp_path / "edge-gmm-home"))
    return tmp_path / "edge-gmm-home"


@pytest.fixture
def fakes(monkeypatch):
    calls, memory = [], {}
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    rt = fake_cudart(memory)
    bindings.runtime = rt
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    return calls, memory


def test_runner_builds_caches_and_runs_the_engine_on_device_buffers(fakes, tmp_path):
    calls, memory = fakes
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    target = ExportTarget(name="t", precision="fp16", workspace_mb=256, fp32_layers=["pool"])
    feed = {"imu": np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32), "mask": np.ones((1, 1), np.float32)}
    with create_runner("onnxrt", b) as ref:
        expected = ref.infer(feed)
    with create_runner("tensorrt", b, precision="fp16", target=target) as r:
        got = r.infer(feed)
        engine = r.plan.engine_path
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
    assert memory == {}  # every device buffer freed on deactivate
    assert calls == [{"flags": ["FP16", "OBEY"], "pool": {"workspace": 256 << 20}, "pinned": ["pool"], "device": "GPU"}]
    assert engine.is_file() and engine.parent == b / "engines" and "fakegpu-sm87-trt10.3.0-fp16" in engine.name
    assert "trtexec" in engine.with_suffix(".trtexec.sh").read_text()
    assert next((b / "engines").glob("timing-*.cache")).read_bytes() == b"+timings"

    with create_runner("tensorrt", b, precision="fp16", target=target) as r:  # cached: no second build
        r.infer(feed)
    assert len(calls) == 1


def test_dla_build_sets_device_type_and_gpu_fallback(fakes, tmp_path):
    calls, _ = fakes
    m = manifest_stub()
    b = write_bundle(tmp_path / "b", m, {"fp32": tiny_onnx(tmp_path / "s.onnx"), "int8": tiny_onnx(tmp_path / "q.onnx")})
    target = ExportTarget(name="dla", precision="int8", dla_core=1, runtime="tensorrt", tensorrt_version="10.3")
    with create_runner("tensorrt", b, precision="int8", target=target) as r:
        assert r.plan.dla_core == 1
    assert calls[0]["device"] == "DLA" and {"INT8", "FP16", "GPU_FALLBACK"} <= set(calls[0]["flags"])


def test_a_planted_engine_or_timing_cache_is_refused_by_verify_and_never_loaded(fakes, tmp_path, device_home, cli):
    import onnx
    from onnx import numpy_helper

    from edge_gmm.errors import BundleError
    from edge_gmm.runtime.bundle import Bundle

    calls, _ = fakes
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    feed = {"imu": np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32), "mask": np.ones((1, 1), np.float32)}
    with create_runner("onnxrt", b) as ref:
        expected = ref.infer(feed)
    with create_runner("tensorrt", b, precision="fp32") as r:
        engine = r.plan.engine_path
    assert f"engines/{engine.name}" in Bundle.open(b).verify()  # recorded when built
    assert (device_home / "trust" / "engines.json").is_file()

    evil = onnx.load(str(tiny_onnx(tmp_path / "evil.onnx")))  # another model behind the same engine name
    evil.graph.initializer[0].CopyFrom(numpy_helper.from_array(-np.ones((4, 3), np.float32), "W"))
    onnx.save(evil, str(tmp_path / "evil.onnx"))
    engine.write_text(json.dumps({"onnx": str(tmp_path / "evil.onnx")}))  # a fake engine names the ONNX it runs
    with pytest.raises(BundleError, match="not an engine file edge-gmm built on this device"):
        Bundle.open(b).verify()
    code, _, err = cli("bundle", "verify", b)
    assert code == 2 and engine.name in err and "--rebuild" in err

    with create_runner("tensorrt", b, precision="fp32") as r:  # the runner rebuilds instead of loading it
        got = r.infer(feed)
    assert len(calls) == 2
    np.testing.assert_allclose(got["logits_state"], expected["logits_state"], rtol=1e-6)
    assert Bundle.open(b).verify()

    cache = next((b / "engines").glob("timing-*.cache"))
    cache.write_bytes(b"planted")
    with pytest.raises(BundleError, match=cache.name):
        Bundle.open(b).verify()
    with create_runner("tensorrt", b, precision="fp32", rebuild=True):
        pass
    assert cache.read_bytes() == b"+timings"  # built without the planted cache, then recorded again
    assert Bundle.open(b).verify()
