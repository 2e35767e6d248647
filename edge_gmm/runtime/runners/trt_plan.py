"""TensorRT build configuration as a pure function: flags, DLA, workspace, timing cache, engine cache key,
and the equivalent `trtexec` command line. Nothing here imports TensorRT, so it is tested on any machine.

Choices (why):
- TensorRT 8.5 to 10.x (weak typing): fp32 and fp16 engines are built from the bundle's FP32 ONNX (TensorRT
  picks fp16 kernels under the FP16 flag); int8 engines from the QDQ ONNX (explicit quantization: the scales
  come from the graph, no calibrator). Layers whose names match `fp32_layers` (the in-graph log-mel frontend:
  its power spectrum overflows fp16) are pinned to FP32 with "obey precision constraints".
- TensorRT 11 (strongly typed only: no FP16/INT8/OBEY flags, no layer precisions): each engine is built from
  the artifact of its own precision as-is; the fp16 ONNX already keeps the log-mel nodes FP32 behind Casts,
  and in the QDQ ONNX what is not quantized runs in FP32.
- An engine is only valid for one GPU model, compute capability, TensorRT version and precision (and the
  ONNX it came from), so all of them are in the cache key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_gmm.errors import ConfigError, MissingDependencyError

DEFAULT_FP32_LAYERS = ("logmel",)


@dataclass(frozen=True)
class TrtApi:
    """Where TensorRT's Python API differs between the versions the runner supports (checked against each
    release's python/src bindings). Everything else the runner calls is common to 8.5 .. 11.x: named tensors
    (num_io_tensors, set_tensor_address, execute_async_v3, 8.5+), set_memory_pool_limit (8.4+; 8.2's
    max_workspace_size is gone in 10), build_serialized_network (build_engine is gone in 10)."""

    since: tuple[int, int]
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names passed to create_network
    strongly_typed: bool  # precision from the graph: no FP16/INT8/OBEY builder flags, no layer precisions


TRT_APIS = (  # oldest first; a version uses the last row it reaches
    TrtApi((8, 5), ("EXPLICIT_BATCH",), False),  # 8.x/9.x: implicit batch is the default, the ONNX parser refuses it
    TrtApi((10, 0), (), False),  # explicit batch only (EXPLICIT_BATCH deprecated, ignored; gone in 11)
    TrtApi((11, 0), ("STRONGLY_TYPED",), True),  # the flag is deprecated and ignored in 11, kept so intent is explicit
)
TESTED_BELOW = (12, 0)  # the `[tensorrt]` extra's upper bound


def trt_version(version: str) -> tuple[int, int]:
    """(major, minor) of "8.5.2.2", "10.3" or a profile's "10.x" (minor 0)."""
    m = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise ConfigError(f"tensorrt: cannot read the TensorRT version {version!r}", hint="write it as MAJOR.MINOR, e.g. 10.3")
    return int(m.group(1)), int(m.group(2) or 0)


def trt_api(version: str) -> TrtApi:
    """The API row for a TensorRT version; below 8.5 (JetPack 4's 8.0/8.2) it is refused, naming the version."""
    v = trt_version(version)
    if v < TRT_APIS[0].since:
        raise MissingDependencyError(
            f"TensorRT {version} is too old for the tensorrt runner: it needs 8.5 or newer (the named-tensor API, "
            f"execute_async_v3 and set_tensor_address, and memory pools)",
            hint="JetPack 4 boards (TensorRT 8.0/8.2, Python 3.6) are not supported, JetPack 5.1+ ships TensorRT 8.5; "
                 "elsewhere install TensorRT 8.5 .. 11.x (pip install 'edge-gmm[tensorrt]') or use the onnxrt runner",
        )
    return [a for a in TRT_APIS if a.since <= v][-1]


@dataclass(frozen=True)
class GpuInfo:
    name: str  # e.g. "Orin" or "NVIDIA H100 80GB HBM3"
    compute_capability: str  # e.g. "8.7"
    tensorrt_version: str  # e.g. "8.6.2" or "10.3.0"
    dla_cores: int = 0


@dataclass(frozen=True)
class TrtBuildPlan:
    onnx_path: Path
    source_precision: str  # which bundle artifact TensorRT parses
    precision: str
    flags: tuple[str, ...]  # trt.BuilderFlag names
    dla_core: int  # -1 = GPU only
    gpu_fallback: bool
    workspace_bytes: int
    timing_cache: Path
    engine_path: Path
    cache_key: str
    fp32_layers: tuple[str, ...] = field(default_factory=tuple)  # name patterns (the API path matches substrings)
    fp32_layer_names: tuple[str, ...] = field(default_factory=tuple)  # exact ONNX node names from the manifest
    network_flags: tuple[str, ...] = ("EXPLICIT_BATCH",)  # trt.NetworkDefinitionCreationFlag names
    strongly_typed: bool = False  # TensorRT 11: precision comes from the ONNX, not from flags

    def trtexec_command(self) -> list[str]:
        cmd = ["trtexec", f"--onnx={self.onnx_path}", f"--saveEngine={self.engine_path}"]
        cmd.append(f"--memPoolSize=workspace:{self.workspace_bytes >> 20}M")
        cmd.append(f"--timingCacheFile={self.timing_cache}")
        if "FP16" in self.flags:
            cmd.append("--fp16")
        if "INT8" in self.flags:
            cmd.append("--int8")
        if self.dla_core >= 0:
            cmd.append(f"--useDLACore={self.dla_core}")
            if self.gpu_fallback:
                cmd.append("--allowGPUFallback")
        if "OBEY_PRECISION_CONSTRAINTS" in self.flags and self.fp32_layer_names:
            # trtexec takes exact layer names (the ONNX parser names layers after their nodes)
            names = ",".join(f"{n}:fp32" for n in self.fp32_layer_names)
            cmd += ["--precisionConstraints=obey", f"--layerPrecisions={names}", f"--layerOutputTypes={names}"]
        return cmd

    def trtexec_line(self) -> str:
        import shlex

        return " ".join(shlex.quote(c) for c in self.trtexec_command())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def engine_cache_key(gpu: GpuInfo, precision: str, onnx_sha256: str, dla_core: int = -1) -> str:
    """`<gpu>-sm<cc>-trt<version>-<precision>[-dla<n>]-<onnx hash prefix>`: one engine per device kind and model."""
    cc = gpu.compute_capability.replace(".", "")
    key = f"{_slug(gpu.name)}-sm{cc}-trt{gpu.tensorrt_version}-{precision}"
    if dla_core >= 0:
        key += f"-dla{dla_core}"
    return f"{key}-{onnx_sha256[:12]}"


def plan_build(
    *,
    artifacts: dict[str, dict],
    bundle_root: Path,
    engine_dir: Path,
    precision: str,
    gpu: GpuInfo,
    workspace_mb: int = 1024,
    dla_core: int = -1,
    gpu_fallback: bool = True,
    fp32_layers: tuple[str, ...] = DEFAULT_FP32_LAYERS,
) -> TrtBuildPlan:
    """What to build for `precision` on `gpu` from a bundle's `artifacts` (the manifest's table)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"tensorrt: unknown precision {precision!r}; choose fp32, fp16 or int8")
    api = trt_api(gpu.tensorrt_version)
    source = _source_artifact(precision, api, artifacts, gpu.tensorrt_version)
    flags = _precision_flags(precision, api)
    if dla_core >= 0:
        if gpu.dla_cores <= dla_core:
            raise ConfigError(
                f"tensorrt: DLA core {dla_core} requested but {gpu.name} has {gpu.dla_cores} DLA core(s)",
                hint="use a target without DLA (dla_core = -1) or a device profile with DLA cores",
            )
        if precision == "fp32":
            raise ConfigError("tensorrt: DLA runs only fp16 or int8; this target asks for fp32 on DLA")
        if gpu_fallback:
            flags.append("GPU_FALLBACK")
    if workspace_mb <= 0:
        raise ConfigError(f"tensorrt: workspace_mb must be > 0, got {workspace_mb}")
    art = artifacts[source]
    # exact node names when export recorded them; otherwise the patterns alone (matched on layer names)
    names = tuple(n for n in art["fp32_nodes"] if any(p in n for p in fp32_layers)) if "fp32_nodes" in art else None
    if "FP16" in flags and fp32_layers and (names is None or names):
        flags.append("OBEY_PRECISION_CONSTRAINTS")
    key = engine_cache_key(gpu, precision, art["sha256"], dla_core)
    return TrtBuildPlan(
        onnx_path=Path(bundle_root) / art["file"],
        source_precision=source,
        precision=precision,
        flags=tuple(flags),
        dla_core=dla_core,
        gpu_fallback=gpu_fallback and dla_core >= 0,
        workspace_bytes=workspace_mb << 20,
        timing_cache=Path(engine_dir) / f"timing-{_slug(gpu.name)}-sm{gpu.compute_capability.replace('.', '')}-trt{gpu.tensorrt_version}.cache",
        engine_path=Path(engine_dir) / f"{key}.engine",
        cache_key=key,
        fp32_layers=tuple(fp32_layers) if "FP16" in flags else (),
        fp32_layer_names=(names or ()) if "FP16" in flags else (),
        network_flags=api.network_flags,
        strongly_typed=api.strongly_typed,
    )


def _source_artifact(precision: str, api: TrtApi, artifacts: dict, version: str) -> str:
    """Which bundle ONNX TensorRT parses: weakly typed builds derive fp16 from the FP32 graph; strongly typed
    ones (TensorRT 11) take each precision's own graph."""
    source = precision if api.strongly_typed or precision == "int8" else "fp32"
    if source in artifacts:
        return source
    if api.strongly_typed and source == "fp16":
        hint = "export with an fp16 target (it writes model.fp16.onnx), or build an fp32 or int8 engine"
    else:
        hint = "export with a target of that precision" if source == "int8" else "export again; every bundle should carry fp32"
    typing = f" (TensorRT {version} builds strongly typed networks: precision comes from the graph)" if api.strongly_typed else ""
    raise ConfigError(
        f"tensorrt: a {precision} engine is built from the bundle's {source} ONNX{typing}, which this bundle lacks "
        f"(it has {', '.join(artifacts)})",
        hint=hint,
    )


def _precision_flags(precision: str, api: TrtApi) -> list[str]:
    if api.strongly_typed:
        return []  # TensorRT 11 has no precision flags: the Q/DQ and Cast nodes decide
    if precision == "fp16":
        return ["FP16"]
    if precision == "int8":
        # explicit quantization: QDQ scales in the graph; FP16 lets the unquantized remainder run in half
        return ["INT8", "FP16"]
    return []


def plan_for_bundle(bundle, gpu: GpuInfo, *, precision: str | None = None, target=None, profile=None,
                    graph: str | None = None) -> TrtBuildPlan:
    """Plan from a Bundle, taking workspace/DLA from `target` (ExportTarget) or the bundle's recorded target,
    and DLA availability from `profile` (DeviceProfile) when the live GPU does not report it. `graph`: one of
    the bundle's graphs (None: the whole-window one); engine names carry the ONNX hash, so graphs never clash."""
    t = target or bundle.manifest.get("target", {})
    get = (lambda k, d: getattr(t, k, d)) if not isinstance(t, dict) else (lambda k, d: t.get(k, d))
    if profile is not None and gpu.dla_cores == 0 and getattr(profile, "dla_cores", 0):
        gpu = GpuInfo(gpu.name, gpu.compute_capability, gpu.tensorrt_version, profile.dla_cores)
    return plan_build(
        artifacts=bundle.graph(graph).artifacts,
        bundle_root=bundle.root,
        engine_dir=bundle.engine_dir,
        precision=precision or get("precision", "fp32"),
        gpu=gpu,
        workspace_mb=int(get("workspace_mb", 1024)),
        dla_core=int(get("dla_core", -1)),
        gpu_fallback=bool(get("gpu_fallback", True)),
        fp32_layers=tuple(get("fp32_layers", DEFAULT_FP32_LAYERS)),
    )


def gpu_from_profile(profile) -> GpuInfo:
    """A GpuInfo from a DeviceProfile, for planning off the device (`edge-gmm engine build --dry-run`)."""
    if not profile.gpu or not profile.tensorrt:
        raise ConfigError(f"device profile {profile.name!r} names no GPU/TensorRT version; it is not a TensorRT device")
    return GpuInfo(profile.gpu, profile.compute_capability or "0.0", profile.tensorrt, profile.dla_cores)
