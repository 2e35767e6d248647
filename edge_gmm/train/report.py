"""report.md of a run: teacher vs student side by side, per-task figures, modality ablation, plots."""

from __future__ import annotations

from pathlib import Path

from edge_gmm.train.checkpoint import ROLES


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render_report(run, result: dict, figures: dict[str, Path], primary: str | None) -> str:
    roles = [r for r in ROLES if r in result]
    lines = [f"# Evaluation of `{run.path.name}`", "",
             f"Dataset `{result['dataset']}`, split `{result['split']}`: {result['windows']} windows; "
             f"modalities {', '.join(result['modalities'])}; window {run.window.length_s} s every {run.window.hop_s} s.", ""]
    lines += ["## Teacher and student", ""]
    rows = [
        ["preset"] + [result[r]["preset"] for r in roles],
        ["parameters"] + [f"{result[r]['parameters']:,}" for r in roles],
        ["FLOPs / window (total)"] + [f"{result[r]['flops']['total'] / 1e6:.1f} M" for r in roles],
        ["FLOPs in the log-mel front end"] + [f"{result[r]['flops']['frontend'] / 1e6:.1f} M" for r in roles],
    ]
    if all("cpu_latency_ms" in result[r] for r in roles):
        rows.append(["CPU latency (torch eager, batch 1, 1 thread)"] + [f"{result[r]['cpu_latency_ms']:.2f} ms" for r in roles])
    if primary:
        rows.append([f"accuracy ({primary})"] + [_pct(result[r]["accuracy"]) for r in roles])
        rows.append([f"macro-F1 ({primary})"] + [f"{result[r]['macro_f1']:.3f}" for r in roles])
    lines += [_table([""] + roles, rows), ""]
    if "student_vs_teacher" in result:
        c = result["student_vs_teacher"]
        lines += [f"The student keeps **{100 * c['accuracy_ratio']:.1f} %** of the teacher's accuracy at "
                  f"**1/{1 / c['flops_ratio']:.1f}** of its FLOPs and {100 * c['parameters_ratio']:.1f} % of its parameters.", ""]
    tasks = list(result[roles[0]]["tasks"])
    if len(tasks) > 1:
        lines += ["## Tasks", ""]
        rows = [[t] + [f"{_pct(result[r]['tasks'][t]['accuracy'])} / {result[r]['tasks'][t]['macro_f1']:.3f}" for r in roles]
                for t in tasks]
        lines += [_table(["task (accuracy / macro-F1)"] + roles, rows), ""]
    if primary and all("ablation" in result[r] for r in roles):
        lines += ["## Modality ablation", "",
                  f"Accuracy on `{primary}` when the mask leaves one modality alone, or hides one "
                  "(the model was trained with modality dropout, so a missing sensor degrades it instead of breaking it).", ""]
        rows = [["all"] + [_pct(result[r]["accuracy"]) for r in roles]]
        for m in result["modalities"]:
            rows.append([f"{m} alone"] + [_pct(result[r]["ablation"]["alone"].get(m)) for r in roles])
        for m in result["modalities"]:
            if all(m in result[r]["ablation"]["without"] for r in roles):
                rows.append([f"without {m}"] + [_pct(result[r]["ablation"]["without"][m]) for r in roles])
        lines += [_table(["inputs"] + roles, rows), ""]
        best_single = max((v for v in result[roles[-1]]["ablation"]["alone"].values() if v == v), default=None)
        if best_single is not None and len(result["modalities"]) > 1:
            gain = 100 * (result[roles[-1]]["accuracy"] - best_single)
            lines += [f"Fusion gain of the {roles[-1]}: {gain:+.1f} points over its best single modality.", ""]
    lines += ["## Figures", ""]
    for name, rel in figures.items():
        lines += [f"![{name}]({rel.as_posix()})", ""]
    if run.metrics:
        lines += ["## Training", ""]
        for r in roles:
            m = run.metrics.get(r, {})
            if m:
                lines.append(f"- {r}: best validation accuracy {_pct(m.get('val_acc'))} at epoch {m.get('best_epoch', -1) + 1} "
                             f"of {len(m.get('history', []))}, {m.get('seconds', 0):.0f} s")
        if "seconds_total" in run.metrics:
            lines.append(f"- total training time {run.metrics['seconds_total']:.0f} s")
        lines.append("")
    return "\n".join(lines)
