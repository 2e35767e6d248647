"""`edge-gmm devices list | show NAME`: the device profiles in devices/ (or EDGE_GMM_PROFILES)."""

from __future__ import annotations

from edge_gmm.cli.common import add_json, emit, table


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="the JetPack matrix: one line per known profile")
    add_json(ls)
    ls.add_argument("--markdown", action="store_true", help="print the matrix as the Markdown table in docs/deploy.md")
    ls.add_argument("--update-doc", metavar="FILE", help="rewrite the generated matrix section of FILE (docs/deploy.md)")
    show = sub.add_parser("show", help="every field of one profile")
    show.add_argument("profile", help="a profile name (see `devices list`) or a path to a .toml file")
    add_json(show)


def run(args) -> int:
    from edge_gmm.config import to_dict
    from edge_gmm.devices import profiles

    if args.action == "list":
        return _list(args, profiles)
    prof = profiles.load_profile(args.profile, allow_unsupported=True)
    data = to_dict(prof)
    data["supported"] = not profiles.support_problem(prof)
    data["file"] = str(profiles.profile_file(args.profile))
    data["builds_tensorrt_engine"] = profiles.has_tensorrt(prof)
    data["default_target_available"] = profiles.default_target_exists(prof)
    lines = [f"{k}: {v}" for k, v in data.items() if v not in ("", [], None)]
    if not data["supported"]:
        lines.append(f"NOT SUPPORTED: {profiles.support_problem(prof)}; `deploy` and `engine build` refuse this profile")
    precision, warning = profiles.pick_precision(prof, "int8")
    if warning:
        lines.append(f"note: {warning}")
    if not data["default_target_available"]:
        lines.append(f"note: export target {prof.default_target!r} is not in export/ yet; pass --target explicitly")
    emit(args, data, "\n".join(lines))
    return 0


def _list(args, profiles) -> int:
    from pathlib import Path

    if args.update_doc:
        from edge_gmm.errors import ConfigError

        doc = Path(args.update_doc)
        if not doc.is_file():
            raise ConfigError(f"{doc}: no such file", hint="pass docs/deploy.md")
        doc.write_text(profiles.update_matrix(doc.read_text()))
        print(f"{doc}: JetPack matrix updated")
    elif args.markdown:
        print(profiles.matrix_markdown())
    else:
        rows = profiles.matrix_rows()
        emit(args, rows, table(rows))
    return 0
