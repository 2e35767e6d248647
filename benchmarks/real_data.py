"""Real datasets for bench_real.py, built offline and imported with the project's own importers, as a new
user would: UEA/UCR .ts files that aeon ships, a spoken-keyword set synthesized with espeak-ng + sox
(split by voice), scikit-learn's handwritten digits as an image folder, and av-digits.

Generated sources (WAV and PNG folders) are cached under the work folder; a SPEC.json beside them says
what they were built from, so a changed recipe rebuilds instead of silently reusing stale clips.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import wave
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edge_gmm.data.avdigits import speak

TS_SETS = {"arrowhead": "ArrowHead", "gunpoint": "GunPoint", "italypowerdemand": "ItalyPowerDemand",
           "osuleaf": "OSULeaf", "acsf1": "ACSF1", "basicmotions": "BasicMotions"}

KWS_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
# A voice is an espeak-ng accent + variant. Of the 8 x 8 voices, those with (accent + variant index) % 4 == 0
# are test voices: 16, two per accent and two per variant, never heard in training (their accent and their
# variant are, in other voices: new speakers, not a new language). The other 48 train.
KWS_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
KWS_VARIANTS = ["m1", "m2", "m3", "m4", "m7", "f1", "f2", "f4"]
KWS_PROSODY = [(s, p) for s in (130, 175) for p in (35, 65)]  # (words per minute, espeak pitch 0..99)
RATE = 16000


def ts_files(name: str) -> tuple[Path, Path]:
    """The _TRAIN.ts / _TEST.ts pair inside the installed aeon package (no download)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("aeon is not installed (pip install aeon, or the [dev] extra)")
    d = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    return d / f"{name}_TRAIN.ts", d / f"{name}_TEST.ts"


def import_ts(key: str, work: Path):
    from edge_gmm.data.importers import ImportOptions, import_dataset

    train, test = ts_files(TS_SETS[key])
    # default rate (none in the file, so the importer's 1 Hz): what a new user gets
    return import_dataset("ts", train, work / f"ds-{key}", test=test, opts=ImportOptions(seed=0, overwrite=True))


def _cached(root: Path, spec: dict) -> bool:
    marker = root / "SPEC.json"
    return marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(spec))  # tuples -> lists


def _mark(root: Path, spec: dict) -> None:
    (root / "SPEC.json").write_text(json.dumps(spec, indent=1) + "\n")


def _degrade(x: np.ndarray, rng) -> np.ndarray:
    """A random onset delay (espeak starts every word at once), gain, and white noise at 5..20 dB SNR."""
    shift = int(rng.integers(0, RATE // 5))
    x = np.concatenate([np.zeros(shift, np.float32), x])[:RATE] * rng.uniform(0.4, 1.0)
    power = float(np.mean(x**2)) + 1e-9
    noise = rng.standard_normal(RATE) * np.sqrt(power / 10 ** (rng.uniform(5, 20) / 10))
    return np.clip(x + noise, -1, 1).astype(np.float32)


def _write_wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def _kws_jobs() -> list[tuple[str, str, str, int, int]]:
    """(split folder, word, voice, speed, pitch) for every clip: a training voice says each word once, in a
    prosody that rotates over the voices (480 clips, like the issue's 380-window set after val); a test voice
    says it in all four (640 clips, so one clip is 0.16 points)."""
    jobs = []
    for i, a in enumerate(KWS_ACCENTS):
        for j, v in enumerate(KWS_VARIANTS):
            test = (i + j) % 4 == 0
            prosody = KWS_PROSODY if test else [KWS_PROSODY[(i + 2 * j) % len(KWS_PROSODY)]]
            jobs += [("test" if test else "train", w, f"{a}+{v}", s, p) for s, p in prosody for w in KWS_WORDS]
    return jobs


def build_kws_folders(root: Path) -> tuple[Path, Path]:
    """SRC/{train,test}/<word>/<voice>_<speed>_<pitch>.wav; cached."""
    spec = {"jobs": _kws_jobs(), "noise": "shift<=0.2s gain 0.4-1 white 5-20dB", "version": 2}
    if not _cached(root, spec):
        for t in ("espeak-ng", "sox"):
            if shutil.which(t) is None:
                raise RuntimeError(f"keyword spotting needs {t} (scripts/setup.sh installs it)")
        shutil.rmtree(root, ignore_errors=True)

        def one(job):
            split, word, voice, speed, pitch = job
            name = f"{voice.replace('+', '_')}_{speed}_{pitch}"
            rng = np.random.default_rng(zlib.crc32(f"{split}/{word}/{name}".encode()))  # same clip every rebuild
            _write_wav(root / split / word / f"{name}.wav", _degrade(speak(word, voice, speed, pitch), rng))

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, _kws_jobs()))
        _mark(root, spec)
    return root / "train", root / "test"


def import_kws(work: Path):
    from edge_gmm.data.importers import ImportOptions, import_dataset

    train, test = build_kws_folders(work / "src-kws")
    # the importer takes a held-out test folder: val is carved from the training voices, test keeps its own
    return import_dataset("wav-folder", train, work / "ds-kws", test=test, opts=ImportOptions(seed=0, name="kws", overwrite=True))


def build_digits_folders(root: Path) -> tuple[Path, Path]:
    """sklearn's 1797 real 8x8 digits as 8-bit grayscale PNGs, a fixed stratified 25 % held out as test."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = {"source": "sklearn load_digits", "test_size": 0.25, "random_state": 0, "version": 1}
    if not _cached(root, spec):
        shutil.rmtree(root, ignore_errors=True)
        d = load_digits()
        tr, te = train_test_split(np.arange(len(d.target)), test_size=0.25, stratify=d.target, random_state=0)
        for split, idx in (("train", tr), ("test", te)):
            for i in idx:
                path = root / split / str(d.target[i]) / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8), mode="L").save(path)
        _mark(root, spec)
    return root / "train", root / "test"


def import_digits(work: Path):
    from edge_gmm.data.importers import ImportOptions, import_dataset

    train, test = build_digits_folders(work / "src-digits")
    return import_dataset("image-folder", train, work / "ds-digits", test=test, opts=ImportOptions(seed=0, name="digits", overwrite=True))


def build_avdigits(work: Path):
    from edge_gmm.data.avdigits import build_av_digits

    return build_av_digits(work / "ds-av-digits", seed=0, overwrite=True)  # the builder's defaults: 60 pairs per digit
