"""`edge-gmm devices list | show NAME`: the device profiles in devices/ (or EDGE_GMM_PROFILES)."""

from __future__ import annotations

from edge_gmm.cli.common import add_json, emit, table


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="one line per known profile")
    add_json(ls)
    show = sub.add_parser("show", help="every field of one profile")
    show.add_argument("profile", help="a profile name (see `devices list`) or a path to a .toml file")
    add_json(show)


def run(args) -> int:
    from edge_gmm.config import to_dict
    from edge_gmm.devices import profiles

    if args.action == "list":
        rows = [
            {
                "name": p.name,
                "arch": p.arch,
                "gpu": p.gpu.split(" (")[0] if p.gpu else "-",
                "jetpack": p.jetpack or "-",
                "tensorrt": p.tensorrt or "-",
                "dla": p.dla_cores,
                "memory_gb": p.memory_gb,
                "target": p.default_target,
            }
            for p in profiles.list_profiles()
        ]
        emit(args, rows, table(rows))
        return 0
    prof = profiles.load_profile(args.profile)
    data = to_dict(prof)
    data["file"] = str(profiles.profile_file(args.profile))
    data["builds_tensorrt_engine"] = profiles.has_tensorrt(prof)
    data["default_target_available"] = profiles.default_target_exists(prof)
    lines = [f"{k}: {v}" for k, v in data.items() if v not in ("", [], None)]
    precision, warning = profiles.pick_precision(prof, "int8")
    if warning:
        lines.append(f"note: {warning}")
    if not data["default_target_available"]:
        lines.append(f"note: export target {prof.default_target!r} is not in export/ yet; pass --target explicitly")
    emit(args, data, "\n".join(lines))
    return 0
