"""av-digits: a real audio-visual dataset in the spirit of AV-MNIST, built offline.

Images: scikit-learn's `load_digits` (real 8x8 handwritten digits, 1797 of them), upscaled to 16x16 RGB
and degraded (pixel noise, a random occluding block). Audio: the spoken digit ("zero" ... "nine") from
espeak-ng over several voices and speeds, converted by sox to 16 kHz mono, shifted in time, and buried
in noise at a low SNR. Both are degraded so that neither alone is reliable and fusion beats either.

Every session is one pair (one 1 s window): `audio` [16000] and `camera` (one frame). Splits are by pair,
stratified by digit; val/test pairs use images not seen in train and voices held out from train
(the last quarter of the voices), so the audio side is speaker-independent.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Dataset, DatasetWriter, Session, Stream
from edge_gmm.errors import ConfigError, DataError, MissingDependencyError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = [
    "en-us+m1", "en-gb+f2", "en-gb-scotland+m3", "en-us+f3", "en-gb-x-rp+m4", "en-029+f4",
    "en-us-nyc+m7", "en-gb-x-gbclan+f1", "en-gb-x-gbcwmd+m2", "en-us+klatt", "en-gb+croak", "en-us+whisper",
]
SPEEDS = (120, 150, 185)  # words per minute
RATE = 16000


def check_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise MissingDependencyError(
            f"av-digits needs {' and '.join(missing)} to synthesize spoken digits",
            hint="sudo apt-get install espeak-ng sox   (scripts/setup.sh installs them)",
        )


def speak(word: str, voice: str, speed: int, pitch: int | None = None) -> np.ndarray:
    """1 s of 16 kHz mono float32 speech: espeak-ng -> sox (resample, pad, trim). `pitch` 0-99, None = the voice's."""
    pitch_args = ["-p", str(pitch)] if pitch is not None else []
    try:
        tts = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), *pitch_args, "--stdout", word],
                             capture_output=True, timeout=30, check=True)
        wav = subprocess.run(
            ["sox", "-t", "wav", "-", "-r", str(RATE), "-b", "16", "-c", "1", "-t", "raw", "-e", "signed-integer", "-", "pad", "0", "1.0", "trim", "0", "1.0"],
            input=tts.stdout, capture_output=True, timeout=30, check=True,
        )
    except subprocess.CalledProcessError as e:
        raise DataError(f"{e.cmd[0]} failed for {word!r} with voice {voice}: {e.stderr.decode(errors='replace').strip()[:200]}") from None
    except subprocess.TimeoutExpired as e:
        raise DataError(f"{e.cmd[0]} took over 30 s for {word!r}") from None
    x = np.frombuffer(wav.stdout, "<i2").astype(np.float32) / 32768
    out = np.zeros(RATE, np.float32)
    out[: min(RATE, x.size)] = x[:RATE]
    return out


def degrade_audio(clip: np.ndarray, rng) -> np.ndarray:
    """Random onset shift (0..0.25 s), gain, and pink-ish noise at an SNR of -8..+2 dB."""
    shift = int(rng.integers(0, RATE // 4))
    x = np.concatenate([np.zeros(shift, np.float32), clip])[:RATE] * rng.uniform(0.5, 1.5)
    power = float(np.mean(x**2)) + 1e-9
    snr_db = rng.uniform(-8.0, 2.0)
    spec = np.fft.rfft(rng.standard_normal(RATE))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f**0.35, RATE)
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-12))
    return np.clip(x + noise, -1, 1).astype(np.float32)


def degrade_image(img8: np.ndarray, size: int, rng) -> np.ndarray:
    """8x8 in 0..16 -> (size, size, 3) in [0, 1]: nearest upscale, a random occluding block, pixel noise."""
    k = size // 8
    img = np.kron(img8 / 16.0, np.ones((k, k)))
    b = size // 2  # a block of half the side hides a quarter of the digit
    y, x = rng.integers(0, size - b + 1, size=2)
    img[y : y + b, x : x + b] = rng.uniform(0, 1)
    img = np.clip(img + rng.normal(0, 0.35, size=img.shape), 0, 1)
    return np.repeat(img[:, :, None], 3, axis=2).astype(np.float32)


def build_av_digits(
    out: str | Path,
    *,
    per_digit: int = 60,
    voices: int = 8,
    speeds: tuple[int, ...] = SPEEDS,
    seed: int = 0,
    image_size: int = 16,
    overwrite: bool = False,
    progress: Callable | None = None,
) -> Dataset:
    if not 1 <= voices <= len(VOICES):
        raise ConfigError(f"--voices must be in 1..{len(VOICES)}, got {voices}")
    if per_digit < 1:
        raise ConfigError("--per-digit must be >= 1")
    if image_size % 8:
        raise ConfigError("image_size must be a multiple of 8")
    check_tools()
    from sklearn.datasets import load_digits  # lazy: only this builder needs scikit-learn

    digits = load_digits()
    rng = np.random.default_rng(seed)
    chosen = VOICES[:voices]
    held_out = chosen[-max(1, voices // 4):] if voices >= 2 else chosen
    train_voices = [v for v in chosen if v not in held_out] or chosen

    jobs = [(d, v, s) for d in range(10) for v in chosen for s in speeds]
    bar = progress(total=len(jobs), desc="espeak-ng") if progress else None
    clips: dict[tuple[int, str, int], np.ndarray] = {}

    def one(job):
        d, v, s = job
        return job, speak(WORDS[d], v, s)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for job, clip in pool.map(one, jobs):
            clips[job] = clip
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    sensors = [
        SensorSpec("audio", "audio", float(RATE), 1, ["FS"]),
        SensorSpec("camera", "camera", 1.0, 3, [], height=image_size, width=image_size),
    ]
    tasks = [TaskSpec("digit", "classification", [str(d) for d in range(10)])]
    meta = {"builder": "av-digits", "per_digit": per_digit, "voices": chosen, "held_out_voices": held_out,
            "speeds": list(speeds), "seed": seed, "images": "sklearn load_digits (8x8)"}
    with DatasetWriter(out, name="av-digits", sensors=sensors, tasks=tasks, window=WindowSpec(1.0, 1.0), meta=meta, overwrite=overwrite) as w:
        for d in range(10):
            pool_idx = rng.permutation(np.flatnonzero(digits.target == d))
            n_test = max(1, round(0.15 * per_digit)) if per_digit >= 3 else 0
            n_val = max(1, round(0.15 * per_digit)) if per_digit >= 3 else 0
            for i in range(per_digit):
                split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
                held = n_test + n_val  # val/test images come first; train cycles over the rest only
                img_i = int(pool_idx[i] if i < held else pool_idx[held + (i - held) % (len(pool_idx) - held)])
                voice = str(rng.choice(held_out if split != "train" else train_voices))
                speed = int(rng.choice(speeds))
                audio = degrade_audio(clips[(d, voice, speed)], rng)
                frame = degrade_image(digits.images[img_i], image_size, rng)
                s = Session(
                    f"d{d}-{i:04d}",
                    {"audio": Stream(np.arange(RATE) / RATE, audio), "camera": Stream(np.zeros(1), frame[None])},
                    {"digit": str(d)},
                    [],
                    {"image_index": img_i, "voice": voice, "speed": speed},
                )
                w.add(s, split)
    return Dataset.open(out)
