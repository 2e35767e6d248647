"""edge-gmm model: list presets, show one preset's size for a set of sensors."""

from __future__ import annotations

from edge_gmm.cli.common import add_json, emit, table


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    info = sub.add_parser("info", help="parameters, FLOPs per window and tokens per modality of a preset")
    info.add_argument("preset", help="preset name (see 'edge-gmm model list')")
    src = info.add_mutually_exclusive_group()
    src.add_argument("--config", help="FusionConfig file: its dataset gives the sensors, its window the shapes")
    src.add_argument("--dataset", help="dataset directory whose sensors to use")
    add_json(info)
    lst = sub.add_parser("list", help="list the presets")
    add_json(lst)


def _specs(args):
    """Sensors, window, tasks, ModelSpec: from --config / --dataset, else the machine-health scenario."""
    from edge_gmm.config import ModelSpec

    if args.config or args.dataset:
        from edge_gmm.train.run import resolve_config, select

        cfg, ds = resolve_config(args.dataset, args.config)
        sensors, tasks = select(cfg, ds)
        return sensors, cfg.window, tasks, cfg.model, str(ds.path)
    from edge_gmm.data.synth import get_scenario

    sc = get_scenario("machine-health")
    return sc.sensors(), sc.window(), sc.tasks(), ModelSpec(), "machine-health scenario (default)"


def run(args) -> int:
    from edge_gmm.model import PRESETS

    if args.action == "list":
        rows = [{"preset": n, **{k: getattr(PRESETS.get(n), k) for k in ("d_model", "depth", "heads", "enc_dim", "projector", "fusion")}}
                for n in PRESETS.names()]
        emit(args, rows, table(rows))
        return 0
    from edge_gmm.model import build_model, flops

    PRESETS.get(args.preset)  # unknown name: ConfigError listing the presets
    sensors, window, tasks, spec, source = _specs(args)
    model = build_model(args.preset, sensors, window, tasks, spec)
    f = flops(model)
    d = model.describe()
    data = {"preset": args.preset, "sensors": source, "parameters": d["parameters"], "flops": f,
            "tokens": d["tokens"], "inputs": {k: list(v) for k, v in model.input_shapes(1).items()},
            "outputs": model.output_names}
    text = (f"preset {args.preset} on {source}\n"
            f"parameters      {d['parameters']:,}\n"
            f"FLOPs / window  {f['total'] / 1e6:.2f} M (log-mel front end {f['frontend'] / 1e6:.2f} M)\n\n"
            + table([{"modality": m, "input": "x".join(map(str, model.input_shapes(1)[m][1:])), "tokens": n}
                     for m, n in d["tokens"].items()]))
    emit(args, data, text)
    return 0
