"""Synthetic multimodal scenarios. `machine-health`: a motor watched by an IMU, a microphone, a small
thermal-like camera and slow series (temperature, current), with five machine states.

Fusion by design (docs/dataset-format.md, "machine-health"): each fault leaves the same signature in
exactly two modalities, arranged as a cycle, so every single modality sees two faults as identical and
the other two as normal:

    fault              imu   audio  camera  env
    bearing_wear        x     x
    electrical_fault          x     x
    overheating                     x       x
    imbalance           x                   x

A modality's generator only receives `fault: bool` (signature on/off), never the class, so the
confusions are exact. Real-rig effects are added per sensor: noise, gain drift, clock offset and skew,
timestamp jitter, dropped samples, and outage segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Dataset, DatasetWriter, Session, Stream
from edge_gmm.errors import ConfigError
from edge_gmm.registry import Registry

SCENARIOS: Registry[type] = Registry("scenario")

# class -> modalities that show its signature (see module docstring)
MACHINE_SIGNATURES: dict[str, tuple[str, ...]] = {
    "normal": (),
    "bearing_wear": ("imu", "audio"),
    "electrical_fault": ("audio", "camera"),
    "overheating": ("camera", "env"),
    "imbalance": ("env", "imu"),
}


@dataclass
class RigEffects:
    """How one sensor deviates from ideal: all times in seconds."""

    noise: float  # additive noise std, in the sensor's units
    jitter_s: float  # timestamp jitter std
    drop_p: float  # probability a sample (or audio block) is lost
    max_offset_s: float = 0.03  # clock offset, uniform in +-max
    max_skew_ppm: float = 80.0  # clock rate error, uniform in +-max
    gain_drift: float = 0.04  # slow multiplicative drift amplitude


@dataclass
class _Session:
    """Per-session physical state shared by all sensors (seconds, Hz, degC, A)."""

    f_rot: float  # shaft rotation frequency
    load: float  # 0..1
    ambient: float
    severity: float  # fault strength 0.6..1
    duration: float


@SCENARIOS.register("machine-health")
class MachineHealth:
    """The machine-health scenario. `camera_size` is the square frame size (32 keeps 2-core training fast)."""

    name = "machine-health"
    labels = list(MACHINE_SIGNATURES)
    rig = {
        "imu": RigEffects(noise=0.015, jitter_s=0.0004, drop_p=0.003),
        "audio": RigEffects(noise=0.01, jitter_s=0.0005, drop_p=0.002),
        "camera": RigEffects(noise=0.03, jitter_s=0.008, drop_p=0.02),
        "env": RigEffects(noise=0.08, jitter_s=0.003, drop_p=0.01),
    }
    outage_p = 0.3  # chance a session has one sensor outage
    audio_block = 320  # audio is stamped per 20 ms block, as an ALSA period would be

    def __init__(self, camera_size: int = 32, audio_rate: int = 16000):
        if not 8 <= camera_size <= 256:
            raise ConfigError(f"camera_size must be in 8..256, got {camera_size}")
        self.camera_size = int(camera_size)
        self.audio_rate = int(audio_rate)

    def sensors(self) -> list[SensorSpec]:
        c = self.camera_size
        return [
            SensorSpec("imu", "imu", 200.0, 6, ["g", "g", "g", "deg/s", "deg/s", "deg/s"]),
            SensorSpec("audio", "audio", float(self.audio_rate), 1, ["FS"]),
            SensorSpec("camera", "camera", 5.0, 3, [], height=c, width=c),
            SensorSpec("env", "timeseries", 10.0, 2, ["degC", "A"]),
        ]

    def tasks(self) -> list[TaskSpec]:
        return [TaskSpec("state", "classification", list(self.labels))]

    def window(self) -> WindowSpec:
        return WindowSpec(length_s=1.0, hop_s=0.5, min_coverage=0.9, label_rule="majority")

    # ------------------------------------------------------------ one session

    def session(self, label: str, seed: int, duration_s: float, sid: str | None = None) -> Session:
        if label not in MACHINE_SIGNATURES:
            raise ConfigError(f"machine-health: unknown label {label!r}; choose one of {', '.join(self.labels)}")
        if duration_s < 2:
            raise ConfigError(f"machine-health: sessions must last >= 2 s, got {duration_s}")
        rng = np.random.default_rng([seed, self.labels.index(label)])
        st = _Session(
            f_rot=rng.uniform(22.0, 28.0),
            load=rng.uniform(0.75, 1.0),
            ambient=rng.uniform(20.0, 26.0),
            severity=rng.uniform(0.6, 1.0),
            duration=float(duration_s),
        )
        outage = None
        if rng.random() < self.outage_p:
            mod = str(rng.choice(list(self.rig)))
            length = rng.uniform(1.5, 4.0)
            start = rng.uniform(0.5, max(0.6, duration_s - length - 0.5))
            outage = (mod, start, start + length)
        sig = MACHINE_SIGNATURES[label]
        streams = {}
        for spec in self.sensors():
            sub = np.random.default_rng([seed, self.labels.index(label), 1 + len(streams)])
            gen: Callable = getattr(self, f"_gen_{spec.name}")
            window = outage[1:] if outage and outage[0] == spec.name else None
            streams[spec.name] = self._record(spec, gen, st, spec.name in sig, sub, window)
        meta = {
            "scenario": self.name,
            "seed": seed,
            "rpm": round(st.f_rot * 60, 1),
            "load": round(st.load, 3),
            "severity": round(st.severity, 3) if sig else 0.0,
            "outage": {"modality": outage[0], "start": round(outage[1], 3), "end": round(outage[2], 3)} if outage else None,
        }
        return Session(sid or f"{label}-s{seed}", streams, {"state": label}, [], meta)

    def _record(self, spec, gen, st: _Session, fault: bool, rng, outage) -> Stream:
        """Sample `gen` on the sensor's own (offset, skewed) clock and stamp it on the host clock."""
        fx = self.rig[spec.name]
        rate_true = spec.rate * (1 + rng.uniform(-1, 1) * fx.max_skew_ppm * 1e-6)
        offset = rng.uniform(-1, 1) * fx.max_offset_s
        n = int(np.floor(st.duration * rate_true))
        tau = np.arange(n) / rate_true  # true time of each sample (what the physics sees)
        x = gen(tau, st, fault, rng)  # float[N, *sample_shape]
        drift = 1 + fx.gain_drift * np.sin(2 * np.pi * tau / rng.uniform(15, 45) + rng.uniform(0, 2 * np.pi))
        if spec.kind == "camera":  # exposure drift, then clip to the display range
            x = np.clip(x * drift[:, None, None, None], 0.0, 1.0)
        else:
            x = x * drift.reshape(-1, *([1] * (x.ndim - 1)))
        if spec.kind == "audio":  # one timestamp per block, samples inside at the nominal rate
            block = self.audio_block
            jit = rng.normal(0, fx.jitter_s, size=n // block + 1)
            t = tau + offset + np.repeat(jit, block)[:n]
            keep = np.repeat(rng.random(n // block + 1) >= fx.drop_p, block)[:n]
        else:
            t = tau + offset + rng.normal(0, fx.jitter_s, size=n)
            keep = rng.random(n) >= fx.drop_p
        t = np.maximum.accumulate(t)  # host stamps never go backwards
        if outage:
            keep &= (tau < outage[0]) | (tau >= outage[1])
        return Stream(t[keep].astype(np.float64), x[keep].astype(np.float32))

    # ------------------------------------------------------------ per-modality physics

    def _gen_imu(self, tau, st: _Session, fault: bool, rng) -> np.ndarray:
        """accel xyz (g), gyro xyz (deg/s). Signature: strong 1x rotation plus a 3x harmonic."""
        fx = self.rig["imu"]
        a1 = 0.04 * st.load + (0.08 * st.severity if fault else 0.0)
        a3 = 0.05 * st.severity if fault else 0.004
        ph = rng.uniform(0, 2 * np.pi, size=3)
        w = 2 * np.pi * st.f_rot * tau
        ax = a1 * np.cos(w + ph[0]) + a3 * np.cos(3 * w + ph[1])
        ay = a1 * np.sin(w + ph[0]) + a3 * np.sin(3 * w + ph[1])
        az = 1.0 + 0.3 * a1 * np.cos(2 * w + ph[2])
        gyro = 20.0 * a1 * np.stack([np.sin(w + ph[1]), np.cos(w + ph[2]), 0.2 * np.sin(2 * w)], axis=1)
        acc = np.stack([ax, ay, az], axis=1) + rng.normal(0, fx.noise, size=(tau.size, 3))
        gyro = gyro + rng.normal(0, 0.3, size=(tau.size, 3))
        return np.concatenate([acc, gyro], axis=1)

    def _gen_audio(self, tau, st: _Session, fault: bool, rng) -> np.ndarray:
        """Mono audio in full scale. Signature: a whine near 3 kHz, amplitude-modulated at shaft speed."""
        n = tau.size
        noise = _colored_noise(n, rng, exponent=0.7) * 0.05
        w = 2 * np.pi * st.f_rot * tau
        harmonics = sum(rng.uniform(0.003, 0.012) * np.sin(k * w + rng.uniform(0, 6.3)) for k in range(1, 9))
        hum = 0.006 * np.sin(2 * np.pi * 50.0 * tau)
        x = noise + harmonics + hum + rng.normal(0, self.rig["audio"].noise, size=n)
        for t0 in rng.uniform(0, st.duration, size=rng.poisson(st.duration / 4)):  # clanks: any class
            i = int(t0 * self.audio_rate)
            m = min(n - i, 1600)
            if m > 0:
                x[i : i + m] += rng.uniform(0.05, 0.2) * np.exp(-np.arange(m) / 300.0) * rng.standard_normal(m)
        if fault:
            f_w = rng.uniform(2600.0, 3400.0)
            x += 0.03 * st.severity * (1 + 0.5 * np.sin(w)) * np.sin(2 * np.pi * f_w * tau)
        return x

    def _gen_camera(self, tau, st: _Session, fault: bool, rng) -> np.ndarray:
        """Auto-ranging thermal view (H, W, 3) in [0, 1]: absolute heat is normalized away, only contrast shows.
        Signature: a hot spot on the terminal box (top right of the motor)."""
        c = self.camera_size
        yy, xx = np.mgrid[0:c, 0:c] / c  # (H, W) in [0, 1)
        body = ((yy - 0.58) / 0.3) ** 2 + ((xx - 0.5) / 0.38) ** 2 < 1
        box = (np.abs(yy - 0.27) < 0.07) & (np.abs(xx - 0.72) < 0.1)  # terminal box on top of the motor
        base = 0.2 + 0.35 * body + 0.2 * box + 0.08 * (((yy - 0.58) / 0.08) ** 2 + ((xx - 0.12) / 0.1) ** 2 < 1)
        spot = np.exp(-(((yy - 0.27) / 0.07) ** 2 + ((xx - 0.72) / 0.08) ** 2))
        heat = base + (0.4 * st.severity * spot if fault else 0.0)
        frames = np.empty((tau.size, c, c), dtype=np.float64)
        for i in range(tau.size):  # ~5 frames per second: a loop is cheap and reads clearly
            dy, dx = rng.integers(-1, 2, size=2)  # camera shake
            frames[i] = np.roll(heat, (dy, dx), axis=(0, 1))
        frames += rng.normal(0, self.rig["camera"].noise, size=frames.shape)
        return _thermal_palette(frames)  # (N, H, W, 3)

    def _gen_env(self, tau, st: _Session, fault: bool, rng) -> np.ndarray:
        """temperature (degC), motor current (A). Signature: hotter and more current (a load or friction rise)."""
        fx = self.rig["env"]
        walk = np.cumsum(rng.normal(0, 0.02, size=tau.size))
        temp = st.ambient + 14.0 * st.load + walk + (14.0 * st.severity if fault else 0.0)
        cur = 4.0 * st.load + 0.08 * np.sin(2 * np.pi * 0.3 * tau) + (2.0 * st.severity if fault else 0.0)
        return np.stack([temp + rng.normal(0, fx.noise, tau.size), cur + rng.normal(0, 0.05, tau.size)], axis=1)


def _colored_noise(n: int, rng, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent, unit std."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    out = np.fft.irfft(spec / f ** (exponent / 2), n)
    return out / (out.std() + 1e-12)


def _thermal_palette(h: np.ndarray) -> np.ndarray:
    """Heat in ~[0, 1] -> an ironbow-like RGB in [0, 1]: (..., ) -> (..., 3)."""
    h = np.clip(h, 0.0, 1.0)
    r = np.clip(1.8 * h - 0.1, 0, 1)
    g = np.clip(2.0 * h - 1.0, 0, 1)
    b = np.clip(0.6 - 2.0 * np.abs(h - 0.3), 0, 1) + np.clip(3.0 * h - 2.4, 0, 1)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 1)


# ---------------------------------------------------------------- public API


def get_scenario(name: str, **opts: Any):
    return SCENARIOS.get(name)(**opts)


def generate_session(scenario: str, label: str, seed: int, duration_s: float, **opts: Any) -> Session:
    """One session of `scenario` in state `label`; deterministic for (seed, label). The serial emulator and
    the device loop's `synth://` source stream sessions made by this."""
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    return get_scenario(scenario, **opts).session(label, seed, duration_s)


def synthesize(
    name: str,
    out: str | Path,
    *,
    seed: int = 0,
    sessions_per_class: int = 20,
    session_seconds: float = 10.0,
    overwrite: bool = False,
    progress: Callable | None = None,
    **opts: Any,
) -> Dataset:
    """Write a scenario dataset to `out`. Splits are by session and stratified by class: per class,
    ~70 % train, ~15 % val, ~15 % test (at least one val and one test session once a class has 3)."""
    if sessions_per_class < 1:
        raise ConfigError("sessions_per_class must be >= 1")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    sc = get_scenario(name, **opts)
    jobs = []
    for ci, label in enumerate(sc.labels):
        rng = np.random.default_rng([seed, 1000 + ci])
        order = rng.permutation(sessions_per_class)
        n_test = max(1, round(0.15 * sessions_per_class)) if sessions_per_class >= 3 else 0
        n_val = max(1, round(0.15 * sessions_per_class)) if sessions_per_class >= 3 else 0
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            jobs.append((label, int(i), split))
    jobs.sort(key=lambda j: (j[0], j[1]))
    bar = progress(total=len(jobs), desc=f"synth {name}") if progress else None
    meta = {"scenario": name, "seed": seed, "sessions_per_class": sessions_per_class, "session_seconds": session_seconds, **opts}
    with DatasetWriter(out, name=name, sensors=sc.sensors(), tasks=sc.tasks(), window=sc.window(), meta=meta, overwrite=overwrite) as w:
        for label, i, split in jobs:
            s = sc.session(label, seed * 100003 + i, session_seconds, sid=f"{label}-{i:03d}")
            w.add(s, split)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return Dataset.open(out)
