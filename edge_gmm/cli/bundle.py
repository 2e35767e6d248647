"""`edge-gmm bundle verify|inspect|keygen`: check a bundle's bytes and signature, show its manifest, make keys."""

from __future__ import annotations

from edge_gmm.cli.common import add_json, emit, table


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    v = sub.add_parser("verify", help="check the signature and every file the runtime loads (artifacts, listed files, "
                       "engines built here); exit 2 naming the file on a mismatch")
    v.add_argument("bundle", help="bundle directory or .tar")
    v.add_argument("--pubkey", help="ed25519 public key (PEM); the bundle must be signed by its private half "
                   "(default: this device's trusted key HOME/trust/bundle.pub when installed; docs/bundle.md)")
    add_json(v)
    i = sub.add_parser("inspect", help="print what the bundle holds: model, sensors, I/O, artifacts, metrics, target, "
                       "and the streaming graphs (encoders, fusion) with their parity and metrics")
    i.add_argument("bundle", help="bundle directory or .tar")
    add_json(i)
    k = sub.add_parser("keygen", help="make an ed25519 key pair for --sign-key / --pubkey")
    k.add_argument("--out", required=True, help="directory for NAME.key (private) and NAME.pub")
    k.add_argument("--name", default="bundle", help="file stem (default: bundle)")
    k.add_argument("--force", action="store_true", help="replace an existing key pair (devices trusting the old public key will refuse new bundles)")


def run(args) -> int:
    from edge_gmm.runtime.bundle import Bundle, generate_keypair

    if args.action == "keygen":
        priv, pub = generate_keypair(args.out, args.name, force=args.force)
        print(f"private key: {priv} (keep it off devices)\npublic key:  {pub} (install it on devices: deploy --pubkey)")
        return 0
    b = Bundle.open(args.bundle)
    if args.action == "verify":
        key = args.pubkey or b.trusted_key()
        checked = b.verify_trusted(args.pubkey)
        if key is not None:
            sig = "signature ok" + ("" if args.pubkey else f" (this device's trusted key {key})")
        else:
            sig = "signed, signature not checked (no --pubkey, no trusted key)" if b.signed else "unsigned (no trusted key installed)"
        emit(args, {"ok": True, "bundle": str(args.bundle), "checked": checked, "signature": sig},
             f"{args.bundle}: ok ({len(checked)} files checked; {sig})")
        return 0
    emit(args, b.manifest, _describe(b))
    return 0


def _describe(b) -> str:
    m = b.manifest
    model = m["model"]
    lines = [f"bundle {b.source}: {model['name']} version {model['version']} (preset {model.get('preset', '?')}, "
             f"{model.get('parameters', '?')} parameters, {model.get('flops', 0) / 1e6:.1f} MFLOP)"]
    t = m.get("target", {})
    lines.append(f"target: {t.get('name')} ({t.get('precision')}, batch {t.get('batch')}, opset {t.get('opset')}, "
                 f"runtime {t.get('runtime')}{', TensorRT ' + t['tensorrt_version'] if t.get('tensorrt_version') else ''})")
    lines.append("sensors: " + ", ".join(f"{s['name']} ({s['kind']}, {s['rate']:g} Hz, {s.get('channels', 1)} ch)" for s in m["sensors"]))
    w = m["window"]
    lines.append(f"window: {w['length_s']} s every {w['hop_s']} s")
    lines.append("tasks: " + "; ".join(f"{t['name']} ({t['type']}: {', '.join(t.get('labels') or t.get('targets') or [])})" for t in m["tasks"]))
    lines.append("\ninputs/outputs:")
    lines.append(table([{"io": side[:-1], "name": x["name"], "shape": "x".join(map(str, x["shape"])), "dtype": x["dtype"]}
                        for side in ("inputs", "outputs") for x in m[side]]))
    lines.append("\nartifacts:")
    rows = []
    for prec, a in m["artifacts"].items():
        met = m.get("metrics", {}).get(prec, {})
        rows.append({"precision": prec, "file": a["file"], "KiB": round(a["bytes"] / 1024, 1), "sha256": a["sha256"][:16] + "…",
                     "accuracy %": ", ".join(f"{k} {v:.2f}" for k, v in met.get("accuracy", {}).items()) or "-",
                     "agreement %": ", ".join(f"{100 * v:.2f}" for v in met.get("top1_agreement", {}).values()) or "-"})
    lines.append(table(rows))
    lint = m.get("lint", {})
    lines.append(f"\nlint: {'ok' if lint.get('ok') else 'FAIL'} ({len(lint.get('issues', []))} issues); signed: {'yes' if b.signed else 'no'}")
    if b.stream:
        lines += _describe_stream(b.stream)
    return "\n".join(lines)


def _shapes(specs: list[dict]) -> str:
    return ", ".join(f"{x['name']} {'x'.join(map(str, x['shape']))}" for x in specs)


def _describe_stream(st: dict) -> list[str]:
    """The streaming split: each graph's I/O, precisions, sizes and lint; how they connect; parity and metrics."""
    lint = st.get("lint", {})
    rows = [{"graph": name, "inputs": _shapes(g["inputs"]), "outputs": _shapes(g["outputs"]),
             "precisions": ", ".join(g["artifacts"]),
             "KiB": ", ".join(f"{a['bytes'] / 1024:.1f}" for a in g["artifacts"].values() if "bytes" in a) or "-",
             "lint": ("ok" if lint[name].get("ok") else f"FAIL ({len(lint[name].get('issues', []))} issues)") if name in lint else "-"}
            for name, g in st["graphs"].items()]
    lines = [f"\nstreaming graphs (D = {st['dim']}; run one encoder call per span, the fusion graph per window):", table(rows)]
    lines.append("layouts: " + "; ".join(f"{m} {lay.get('tokens')} tokens (span {lay.get('span')}, hop {lay.get('hop')}, "
                                         f"{lay.get('per_call', 1)} per call)" for m, lay in st["layouts"].items()))
    if st.get("connects"):
        lines.append(f"connects: {st['connects']}")
    par = st.get("parity", {})
    if par:
        lines.append(f"stream parity vs {par.get('reference', 'torch')} on {par.get('windows', '?')} windows: max |diff| "
                     + ", ".join(f"{k} {v:.2g}" for k, v in par.get("max_abs_diff", {}).items()) + f" (atol {par.get('atol', '?')})")
    met = st.get("metrics", {})
    if met:
        lines.append("stream metrics (encoders + fusion composed, vs the whole-window fp32 graph):")
        lines.append(table([{"precision": p, "accuracy %": ", ".join(f"{k} {v:.2f}" for k, v in x.get("accuracy", {}).items()) or "-",
                             "agreement %": ", ".join(f"{100 * v:.2f}" for v in x.get("top1_agreement", {}).values()) or "-"}
                            for p, x in met.items()]))
    return lines
