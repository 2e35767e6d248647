"""`edge-gmm export RUN --target T --out BUNDLE`: ONNX + parity + FP16/INT8 + gates + TensorRT lint -> bundle."""

from __future__ import annotations

import sys

from edge_gmm.cli.common import add_json, emit, table


def add_export_options(p) -> None:
    """Options shared with train-and-export."""
    p.add_argument("--target", required=True, help="export target: a name (e.g. jetson-orin-nano-int8) or a .toml path")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--quantizer", default="ort", choices=["ort", "modelopt", "optimum"],
                   help="INT8 quantizer (default: onnxruntime's; modelopt/optimum need their extras)")
    p.add_argument("--sign-key", help="ed25519 private key (PEM) to sign the manifest (make one: edge-gmm bundle keygen)")
    p.add_argument("--max-accuracy-drop", type=float, help="override the target's INT8/FP16 accuracy gate (points)")
    p.add_argument("--min-agreement", type=float, help="override the target's top-1 agreement gate (0..1)")
    p.add_argument("--eval-split", default="", help="dataset split to evaluate on (default: val, else test)")
    p.add_argument("--tar", action="store_true", help="also write BUNDLE.tar")
    p.add_argument("--force", action="store_true", help="replace a bundle already at --out (and its .tar)")


def configure(p) -> None:
    p.add_argument("run", help="training run directory (from edge-gmm train)")
    add_export_options(p)
    add_json(p)


def load_target_with_overrides(args):
    from edge_gmm.export.targets import load_target

    target = load_target(args.target)
    if args.max_accuracy_drop is not None:
        target.max_accuracy_drop = args.max_accuracy_drop
    if args.min_agreement is not None:
        target.min_top1_agreement = args.min_agreement
    return target


def run(args) -> int:
    from edge_gmm.export.pipeline import check_out, export_run

    target = load_target_with_overrides(args)
    check_out(args.out, force=args.force, tar=args.tar)
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    result = export_run(args.run, target=target, out=args.out, quantizer=args.quantizer, sign_key=args.sign_key,
                        eval_split=args.eval_split, log=log)
    finish(args, result)
    return 0


def finish(args, result) -> None:
    if args.tar:
        from edge_gmm.runtime.bundle import pack_tar

        pack_tar(result.bundle, str(result.bundle).rstrip("/") + ".tar")
    m = result.manifest
    text = (f"wrote {result.bundle} ({m['target']['name']}, lint {'ok' if m['lint']['ok'] else 'FAIL'}"
            f"{', signed' if args.sign_key else ''})\n" + table(result.summary_rows()))
    emit(args, {"bundle": str(result.bundle), "manifest": m, "timings": result.timings}, text)
