"""The markdown bench_real.py prints and publishes: one line per dataset, the av-digits fusion checks, notes."""

from __future__ import annotations

from benchmarks.report import md_table

COLUMNS = ["dataset", "windows train/val/test", "peer", "peer %", "teacher %", "student FP32 %", "student INT8 %",
           "fit s", "student ms/window", "INT8 >= peer - 1", "FP32 >= teacher - 1", "fit <= 5 min"]

NOTES = (
    "Defaults only: each dataset imported as `edge-gmm dataset import` would (UEA .ts at the importer's default 1 Hz; "
    "WAV and image folders with a held-out test folder) and trained as `edge-gmm train --dataset DIR` (the only "
    "override: `train.seed`; `--quick` also sets `train.time_budget_s`). Accuracy on each dataset's test split; mean "
    "over the training seeds (`--seeds N`: train.seed 0..N-1; 1 unless the command says). Teacher: torch. Student "
    "FP32 / INT8: ONNX Runtime on the `cpu-onnx-int8` bundle (\"gate failed\": the INT8 accuracy gate refused the "
    "export, so a user gets no bundle; measured with the gate open). Windows: the dataset's splits; \u2020 = the recipe "
    "trained on the val windows too (too few to select an epoch by). Fit s: teacher + student training, wall clock, "
    "torch on every usable core. ms/window: INT8 student, ORT, batch 1, one thread. Peers fit on train+val windows "
    "(the model trains on train and early-stops on val) and score on the same test windows; av-digits peers fit on "
    "train only, because its val split holds the test voices. MiniRocket: mean of random_state 0, 1, 2. Keywords: 10 "
    "words, 64 espeak-ng voices (8 accents x 8 variants), 16 of them test-only (never heard in training); 48 train "
    "voices say each word once (130/175 wpm x pitch 35/65, rotating), test voices in all four; onset shift, gain, "
    "white noise at 5-20 dB SNR, 16 kHz 1 s clips. Digits: sklearn load_digits, stratified 25 % test (random_state 0).")


DAGGER = " \u2020"


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _windows(r: dict) -> str:
    w, used = r["windows"], r["model_windows"]
    # the recipe folded val into training: it says so (val_trained_on), else the counts show it
    merged = used.get("val_trained_on", bool(w["val"]) and used["train"] >= w["train"] + w["val"])
    return f"{w['train']}/{w['val']}{DAGGER if merged else ''}/{w['test']}"


def _line(r: dict) -> dict:
    if "error" in r:
        return {"dataset": r["dataset"], "peer": f"ERROR: {r['error'][:100]}"}
    t = r["targets"]
    return {"dataset": r["dataset"], "windows train/val/test": _windows(r), "peer": r["peer"],
            "peer %": f"{r['peer_acc']:.1f}", "teacher %": f"{r['teacher']:.1f}", "student FP32 %": f"{r['student_fp32']:.1f}",
            "student INT8 %": f"{r['student_int8']:.1f}" + ("" if r["int8_gate"] == "ok" else " (gate failed)"),
            "fit s": f"{r['fit_s']:.0f}", "student ms/window": f"{r['ms_int8']:.2f}", "INT8 >= peer - 1": _yes(t["vs_peer"]),
            "FP32 >= teacher - 1": _yes(t["vs_teacher"]), "fit <= 5 min": _yes(t["fit_5min"])}


def _fusion(r: dict) -> str:
    alone, t = r["student_alone"], r["targets"]
    nan = float("nan")
    return md_table([{
        "student INT8 fused %": f"{r['student_int8']:.1f}",
        "student audio alone / camera alone % (torch, mask)": f"{alone.get('audio', nan):.1f} / {alone.get('camera', nan):.1f}",
        "peer audio / camera / late fusion %": f"{r['peer_audio_acc']:.1f} / {r['peer_camera_acc']:.1f} / {r['peer_acc']:.1f}",
        "fused > best single peer": _yes(t["vs_best_single"]), "fused > late fusion": _yes(t["vs_late_fusion"])}])


def render(rows: list[dict]) -> str:
    """The main table, and the av-digits fusion table under it when that row ran."""
    text = md_table([_line(r) for r in rows], COLUMNS)
    av = [r for r in rows if "peer_audio_acc" in r and "error" not in r]
    return text + (f"\n\nav-digits fusion:\n\n{_fusion(av[0])}" if av else "")
