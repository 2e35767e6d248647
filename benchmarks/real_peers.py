"""Peers for bench_real.py, fitted in the same run on the same windows the model gets (`make_windows` of the
imported dataset with the run's window): aeon MiniRocket for series, logistic regression on log-mel
statistics for audio and on pixels for images, and their late fusion for av-digits.

Each peer fits on train + val windows (the model trains on train and early-stops on val, so it sees both)
and is scored on test. The exception is av-digits, whose builder draws val and test from the same held-out
voices: there the peers fit on train only, so that no peer hears a test voice.
"""

from __future__ import annotations

import time

import numpy as np


def windows_by_split(ds, window) -> dict:
    """{split: Windows} for train, val and test, cut with the run's window as the model's are."""
    from edge_gmm.data.windowing import make_windows

    return {s: make_windows(ds, s, window) for s in ("train", "val", "test")}


def concat(parts: list):
    from edge_gmm.data.windowing import Windows

    return Windows.concat([p for p in parts if len(p)])  # an empty val split adds nothing


def _labels(w) -> np.ndarray:
    return next(iter(w.labels.values()))  # primary (only) task; -1 = unlabelled, none in these sets


def _acc(pred, y) -> float:
    return 100.0 * float(np.mean(pred == y))


def minirocket(train, test, seeds=(0, 1, 2)) -> dict:
    """aeon MiniRocket on the [W, C, T] series, one fit per seed; accuracy and fit time are the means."""
    from aeon.classification.convolution_based import MiniRocketClassifier

    name = next(iter(train.inputs))
    xtr, xte = train.inputs[name].astype(np.float64), test.inputs[name].astype(np.float64)
    MiniRocketClassifier(random_state=0, n_jobs=1).fit(xtr[:8], np.arange(8) % 2)  # numba compiles on first use: not fit time
    accs, fits = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        clf = MiniRocketClassifier(random_state=seed, n_jobs=1).fit(xtr, _labels(train))
        fits.append(time.perf_counter() - t0)
        accs.append(_acc(clf.predict(xte), _labels(test)))
    return {"peer": f"MiniRocket ({len(seeds)} seeds)", "peer_acc": float(np.mean(accs)), "peer_accs": accs,
            "peer_fit_s": float(np.mean(fits))}


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """[n_mels, n_fft//2+1] triangular filters, evenly spaced on the HTK mel scale from 0 to Nyquist."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(0, mel(rate / 2), n_mels + 2))
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))


def logmel_stats(audio: np.ndarray, rate: int = 16000, n_mels: int = 40, chunk: int = 128) -> np.ndarray:
    """[W, 2*n_mels]: per-band mean and std over time of a log-mel spectrogram (25 ms Hann frames, 10 ms hop)."""
    win, hop, n_fft = int(0.025 * rate), int(0.010 * rate), 512
    fb, hann = mel_filterbank(rate, n_fft, n_mels), np.hanning(win)
    out = []
    for s in range(0, len(audio), chunk):  # chunks bound the spectrogram's memory
        frames = np.lib.stride_tricks.sliding_window_view(audio[s : s + chunk], win, axis=-1)[:, ::hop] * hann
        logmel = np.log(np.abs(np.fft.rfft(frames, n_fft)) ** 2 @ fb.T + 1e-6)
        out.append(np.concatenate([logmel.mean(1), logmel.std(1)], axis=1))
    return np.concatenate(out)


def pixels(w) -> np.ndarray:
    """[W, H*W] gray pixels: the importers repeat gray images over RGB, so one channel says it all."""
    cam = w.inputs["camera"]
    return cam.mean(axis=1).reshape(len(cam), -1)


def _logistic(xtr, ytr, xte) -> tuple[np.ndarray, float]:
    """Class probabilities on xte (columns = sorted labels) from standardized logistic regression; fit seconds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(xtr, ytr)
    return clf.predict_proba(xte), time.perf_counter() - t0


def _proba_acc(proba, ytr, yte) -> float:
    return _acc(np.unique(ytr)[proba.argmax(1)], yte)


def logistic_audio(train, test) -> dict:
    ytr = _labels(train)
    proba, fit_s = _logistic(logmel_stats(train.inputs["audio"]), ytr, logmel_stats(test.inputs["audio"]))
    return {"peer": "logistic on log-mel stats", "peer_acc": _proba_acc(proba, ytr, _labels(test)), "peer_fit_s": fit_s}


def logistic_pixels(train, test) -> dict:
    ytr = _labels(train)
    proba, fit_s = _logistic(pixels(train), ytr, pixels(test))
    return {"peer": "logistic on pixels", "peer_acc": _proba_acc(proba, ytr, _labels(test)), "peer_fit_s": fit_s}


def av_fusion(train, test) -> dict:
    """Each modality's logistic peer and their late fusion (mean of the two predict_proba)."""
    ytr, yte = _labels(train), _labels(test)
    pa, fa = _logistic(logmel_stats(train.inputs["audio"]), ytr, logmel_stats(test.inputs["audio"]))
    pi, fi = _logistic(pixels(train), ytr, pixels(test))
    return {"peer": "late fusion (log-mel LR + pixel LR)", "peer_acc": _proba_acc((pa + pi) / 2, ytr, yte),
            "peer_fit_s": fa + fi, "peer_audio_acc": _proba_acc(pa, ytr, yte), "peer_camera_acc": _proba_acc(pi, ytr, yte)}
