"""`edge-gmm engine build BUNDLE [--profile P]`: build (or reuse) the TensorRT engine of a bundle on this device.

The engine is cached beside the bundle, keyed by GPU, compute capability, TensorRT version and precision, and
its sha256 recorded in the device's HOME/trust/engines.json (docs/bundle.md); the equivalent `trtexec` command
is written next to it. `--dry-run --profile P` prints the plan and the
trtexec line anywhere, without TensorRT. How the build differs per TensorRT version (8.5 .. 11; 8.2 is refused)
is `trt_plan.TRT_APIS`; the profile's TensorRT version decides it in a dry run, the installed one otherwise.
"""

from __future__ import annotations

from edge_gmm.cli.common import add_json, emit


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build the engine for this GPU (cached beside the bundle)")
    b.add_argument("bundle", help="bundle directory or .tar")
    b.add_argument("--profile", help="device profile name or .toml (DLA cores, TensorRT version); default: none")
    b.add_argument("--precision", help="fp32 | fp16 | int8 (default: the bundle's target precision, adjusted by the profile)")
    b.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    b.add_argument("--dry-run", action="store_true", help="print the build plan and trtexec command without TensorRT (needs --profile)")
    add_json(b)


def run(args) -> int:
    from edge_gmm.errors import ConfigError
    from edge_gmm.runtime.bundle import Bundle
    from edge_gmm.runtime.runners.trt_plan import gpu_from_profile, plan_for_bundle

    bundle = Bundle.open(args.bundle)
    profile = None
    # weakly typed TensorRT (< 11) builds fp16 from the FP32 ONNX, so the target's precision counts, not which
    # artifacts exist; on TensorRT 11 the plan asks for the fp16 artifact itself
    precision = args.precision or bundle.manifest.get("target", {}).get("precision") or bundle.default_precision()
    notes = []
    if args.profile:
        from edge_gmm.devices.profiles import load_profile, pick_precision

        profile = load_profile(args.profile)
        if not args.precision:
            precision, warning = pick_precision(profile, precision)
            if warning:
                notes.append(warning)
    if args.dry_run:
        if profile is None:
            raise ConfigError("--dry-run needs --profile (the GPU and TensorRT version to plan for)")
        plan = plan_for_bundle(bundle, gpu_from_profile(profile), precision=precision, profile=profile)
        _emit(args, plan, notes, built=False)
        return 0
    from edge_gmm.runtime.runners.tensorrt import ensure_engine, import_tensorrt

    # build only from verified (and, on a device with a trusted key, signed) ONNX; a cached engine that is not
    # this device's own is rebuilt by ensure_engine, so engines/ is not checked here
    bundle.verify_trusted(engines=False)
    trt, cudart = import_tensorrt()
    plan, _ = ensure_engine(trt, cudart, bundle, precision=precision, profile=profile, rebuild=args.rebuild)
    _emit(args, plan, notes, built=True)
    return 0


def _emit(args, plan, notes, built: bool) -> None:
    data = {
        "engine": str(plan.engine_path), "cache_key": plan.cache_key, "precision": plan.precision,
        "source": plan.source_precision, "flags": list(plan.flags), "dla_core": plan.dla_core,
        "workspace_mb": plan.workspace_bytes >> 20, "timing_cache": str(plan.timing_cache),
        "trtexec": plan.trtexec_line(), "built": built, "notes": notes,
        "strongly_typed": plan.strongly_typed, "network_flags": list(plan.network_flags),
    }
    typing = f"strongly typed from {plan.onnx_path.name}" if plan.strongly_typed else f"weakly typed from {plan.onnx_path.name}"
    flags = ", ".join(plan.flags) or ("none (precision from the graph)" if plan.strongly_typed else "none (fp32)")
    text = "\n".join([*notes, f"{'engine' if built else 'would build'}: {plan.engine_path} ({typing})",
                      f"flags: {flags}; DLA core: {plan.dla_core if plan.dla_core >= 0 else 'no'}; "
                      f"workspace {plan.workspace_bytes >> 20} MiB", f"trtexec equivalent:\n  {plan.trtexec_line()}"])
    emit(args, data, text)
