"""`edge-gmm` entry point: a table of subcommands, each a module imported only when it runs.

A subcommand module defines `configure(parser)` (adds its arguments, may add its own subparsers) and
`run(args) -> int | None`. Any EdgeGmmError becomes one message on stderr and its `exit_code` (2 for a user
error, 75 for a RuntimeFailure; errors.py); `--debug` shows the traceback instead. Any other exception is a bug:
one line, then the traceback, and exit 1 (a supervisor restarts it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module under edge_gmm.cli, one-line help). The user's three jobs first.
COMMANDS: dict[str, tuple[str, str]] = {
    "train-and-export": ("train_and_export", "train teacher + student, export, quantize and bundle (desktop)"),
    "deploy": ("deploy", "put a bundle on a device over SSH, verify it, start the loop, roll back on failure"),
    "subscribe": ("subscribe", "watch fused predictions from one or all devices over MQTT"),
    "device": ("device", "status | logs | stop | start | restart | rollback | releases of a deployed device"),
    "run": ("run", "on the device: stream sensors through the model and publish predictions over MQTT"),
    "demo": ("demo", "the whole job end to end on embedded defaults"),
    "dataset": ("dataset", "synth | build | import | inspect datasets"),
    "model": ("model", "model presets: info"),
    "train": ("train", "train the teacher and distill the student"),
    "tune": ("tune", "try training settings within a time budget, keep the best by validation"),
    "evaluate": ("evaluate", "evaluate a run: accuracy, F1, confusion, modality ablation, report.md"),
    "export": ("export", "export a run to an ONNX bundle (FP32/FP16/INT8) for a target"),
    "bundle": ("bundle", "verify | inspect a bundle"),
    "bench": ("bench", "latency table of a bundle per runner and precision"),
    "engine": ("engine", "build the TensorRT engine of a bundle on this device"),
    "doctor": ("doctor", "on the device: check the engine against the bundle's golden windows, report platform and latency"),
    "devices": ("devices", "list | show device profiles"),
    "record": ("record", "capture live sensors into a dataset"),
    "bridge": ("bridge", "serial bridge: monitor a port, emulate an MCU"),
}
# Workstation commands (torch, model, train, export) need Python 3.10+; the rest is the torch-free device side,
# which runs on 3.8 too (JetPack 5). Refused up front: a sentence, not an ImportError deep in torch or the model.
WORKSTATION_ONLY = ("train-and-export", "demo", "model", "train", "tune", "evaluate", "export")
WORKSTATION_PYTHON = (3, 10)


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<18}{helptext}" for name, (_, helptext) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="edge-gmm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Multi-sensor AI on the edge: train a generalist multimodal model, distill, export to "
        "ONNX/TensorRT, deploy to a Jetson, publish fused predictions over MQTT.",
        epilog=f"commands:\n{lines}\n\nRun 'edge-gmm COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return p


def build_parser(name: str):
    """The parser of one subcommand, and its module."""
    modname, helptext = COMMANDS[name]
    mod = importlib.import_module(f"edge_gmm.cli.{modname}")
    doc = mod.__doc__ or ""
    epilog = doc[doc.index("examples:"):] if "examples:" in doc else None  # a module's examples show in --help
    p = argparse.ArgumentParser(prog=f"edge-gmm {name}", description=helptext, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    mod.configure(p)
    return p, mod


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _top_parser().print_help()
        return 0
    if argv[0] == "--version":
        from edge_gmm import __version__

        print(f"edge-gmm {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"edge-gmm: unknown command {name!r}{hint}; see 'edge-gmm --help'", file=sys.stderr)
        return 2
    debug = "--debug" in rest or os.environ.get("EDGE_GMM_DEBUG") == "1"
    from edge_gmm.errors import EdgeGmmError

    try:
        if name in WORKSTATION_ONLY and sys.version_info < WORKSTATION_PYTHON:
            from edge_gmm.errors import MissingDependencyError

            raise MissingDependencyError(
                f"'{name}' runs on the workstation and needs Python {'.'.join(map(str, WORKSTATION_PYTHON))}+ "
                f"(this is {sys.version_info.major}.{sys.version_info.minor})",
                hint="train and export on a Python 3.10+ machine; on this one the device side works: "
                "run, subscribe, bundle, bench, engine, doctor, devices, bridge",
            )
        parser, mod = build_parser(name)
        args = parser.parse_args(rest)
        code = mod.run(args)
        return int(code or 0)
    except EdgeGmmError as e:
        if debug:
            raise
        print(f"edge-gmm {name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"edge-gmm {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line, keep the traceback for the report
        if debug:
            raise
        import traceback

        print(f"edge-gmm {name}: internal error: {type(e).__name__}: {e} (a bug; please report it with the "
              f"traceback below)", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
