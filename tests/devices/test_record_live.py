"""`edge-gmm record` from real parts, no mocks: PortAudio -> ALSA from a file-backed capture device, OpenCV
on a generated video file, the virtual MCU on a pty; then `dataset split` and `train` on what was recorded.

The ALSA device: a `file` PCM whose `infile` is a raw 440 Hz tone, over a `null` slave, made the default
through ~/.asoundrc in a temporary HOME given to the `record` subprocess (docs/recording.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_gmm.config import SensorSpec
from edge_gmm.data.format import Dataset
from edge_gmm.devices.sources import open_source
from edge_gmm.errors import ConfigError

pytest.importorskip("sounddevice")
cv2 = pytest.importorskip("cv2")

EDGE_GMM = [sys.executable, "-m", "edge_gmm.cli.main"]
REPO = Path(__file__).resolve().parents[2]
RATE = 8000  # the ALSA device's rate; audio://default?rate=8000 reads it without resampling
TONE_HZ = 440.0
FAST_TRAIN = ["--epochs", "1", "--student-epochs", "1", "--preset", "student-tiny", "--student", "student-tiny", "--threads", "1"]


@pytest.fixture(scope="module")
def alsa_home(tmp_path_factory):
    """A HOME whose ~/.asoundrc makes the default capture device play tone.raw (S16_LE mono, 30 s)."""
    home = tmp_path_factory.mktemp("home")
    tone = home / "tone.raw"
    t = np.arange(30 * RATE) / RATE
    (0.5 * np.sin(2 * np.pi * TONE_HZ * t) * 32767).astype("<i2").tofile(tone)
    (home / ".asoundrc").write_text(
        'pcm.tonefile { type file; slave.pcm "null"; file "/dev/null"; infile "%s"; format "raw" }\n'
        "pcm.!default { type plug; slave { pcm \"tonefile\"; format S16_LE; rate %d; channels 1 } }\n" % (tone, RATE)
    )
    return home


def video(path, frames: int, fps: float = 10.0):
    """An MJPG .avi whose red channel ramps 0 -> 255 over its frames (blue the other way), 64x48."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        f = np.zeros((48, 64, 3), np.uint8)
        f[:, :, 2] = round(i * 255 / (frames - 1))  # BGR: red
        f[:, :, 0] = 255 - f[0, 0, 2]
        w.write(f)
    w.release()
    return path


def record(home, *args, timeout=60):
    """`edge-gmm record ARGS --json` in a subprocess with HOME=home; returns (code, result or None, stderr)."""
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([*EDGE_GMM, "record", *map(str, args), "--json"], capture_output=True, text=True, env=env, timeout=timeout)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr


def only_session(path):
    ds = Dataset.open(path)
    (sid,) = ds.session_ids()
    return ds.load_session(sid)


def test_record_audio_through_portaudio_alsa_holds_the_device_signal(alsa_home, tmp_path):
    # before: "invalid URL, protocol 'audio' not known" (record opened every source as a serial link)
    code, r, err = record(alsa_home, "--sources", f"audio://default?rate={RATE}", "--out", tmp_path / "a", "--seconds", "2",
                          "--label", "state=on", "--classes", "state=on,off")
    assert code == 0, err
    assert r["streams"]["audio"]["rate_hz"] == RATE and r["defaults"] == {}
    audio = only_session(tmp_path / "a").streams["audio"]
    # real time: the clockless device is paced (the stop lands a few blocks after 2 s on a loaded machine: 2.25 s
    # once in a full suite; an unpaced device would hand over its whole file at once)
    assert len(audio) == pytest.approx(2 * RATE, rel=0.25)
    assert np.allclose(np.diff(audio.t), 1 / RATE)  # contiguous sample times, never overlapping blocks
    spectrum = np.abs(np.fft.rfft(audio.x))
    assert np.argmax(spectrum) * RATE / len(audio.x) == pytest.approx(TONE_HZ, abs=2)
    assert np.sqrt(np.mean(audio.x ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # the tone, not zeros


def test_audio_without_a_rate_records_at_the_default_and_says_so(alsa_home, tmp_path):
    code, r, err = record(alsa_home, "--sources", "audio://default", "--out", tmp_path / "a", "--seconds", "1",
                          "--label", "state=on", "--classes", "state=on,off")
    assert code == 0, err
    assert r["streams"]["audio"]["rate_hz"] == 16000 and r["defaults"] == {"audio": ["rate"]}
    assert "note: audio (audio://default) records at 16000 Hz: defaults for rate" in err


def test_a_video_file_plays_in_real_time_at_the_sensor_rate_and_ends_the_recording(tmp_path):
    clip = video(tmp_path / "clip.avi", frames=30)  # 3 s at 10 fps
    t0 = time.monotonic()
    code, r, err = record(tmp_path, "--sources", f"camera://{clip}?rate=5&size=16x12", "--out", tmp_path / "c",
                          "--label", "state=on", "--classes", "state=on,off")
    assert code == 0, err
    assert time.monotonic() - t0 > 2.8  # paced, not decoded as fast as possible
    assert r["stopped"].endswith("ended")
    cam = only_session(tmp_path / "c").streams["camera"]
    assert cam.x.shape == (15, 16, 12, 3)  # HxW; 3 s x 5 Hz; frame k of the recording is frame 2k of the file
    assert np.allclose(np.diff(cam.t), 0.2, atol=0.02)
    red = cam.x[:, :, :, 0].mean(axis=(1, 2))
    assert np.allclose(red, np.arange(0, 30, 2) / 29, atol=0.03)


def test_a_looped_video_file_starts_again(tmp_path):
    clip = video(tmp_path / "short.avi", frames=10)  # 1 s
    code, r, err = record(tmp_path, "--sources", f"camera://{clip}?rate=5&size=8x8&loop=1", "--out", tmp_path / "c",
                          "--seconds", "2.5", "--label", "state=on", "--classes", "state=on,off")
    assert code == 0, err
    red = only_session(tmp_path / "c").streams["camera"].x[:, :, :, 0].mean(axis=(1, 2))
    assert len(red) >= 12 and red[5] < red[4]  # frame 5 shows the file's start again


@pytest.fixture
def emulator(tmp_path):
    """The virtual MCU (imu 200 Hz x6, env 10 Hz x2) on a pty linked at tmp/ttyMCU; stopped by PID."""
    link = tmp_path / "ttyMCU"
    p = subprocess.Popen([*EDGE_GMM, "bridge", "emulate", "--pty", "--link", str(link), "--seconds", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert f"virtual MCU port: {link}" in first, first + p.stderr.read()
    yield link
    p.terminate()
    p.wait(5)


def test_one_sources_file_records_mcu_audio_and_camera_then_splits_and_trains(alsa_home, emulator, tmp_path, cli):
    clip = video(tmp_path / "clip.avi", frames=20)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"imu: pty:{emulator}\nenv: pty:{emulator}\naudio: audio://default?rate={RATE}\n"
                       f"camera: 'camera://{clip}?rate=5&size=16x16&loop=1'\n")
    out = tmp_path / "rec"
    for i, label in enumerate(["normal", "bearing_wear", "normal", "bearing_wear"]):
        extra = ["--classes", "state=normal,bearing_wear"] if i == 0 else ["--append"]  # appended: the dataset's own specs
        code, r, err = record(alsa_home, "--sources", sources, "--out", out, "--seconds", "2", "--label", f"state={label}",
                              "--session-id", f"{label}-{i}", *extra)
        assert code == 0, err
    ds = Dataset.open(out)
    assert {s.name: (s.kind, s.rate) for s in ds.sensors} == {"imu": ("imu", 200), "env": ("timeseries", 10),
                                                             "audio": ("audio", RATE), "camera": ("camera", 5)}
    s = ds.load_session("bearing_wear-3")
    assert s.labels == {"state": "bearing_wear"}
    for name, n in (("imu", 400), ("audio", 2 * RATE), ("camera", 10)):
        assert len(s.streams[name]) >= 0.8 * n, name
    assert min(st.start for st in s.streams.values()) < 0.6  # one host clock: all start near the session's zero

    code, text, err = cli("dataset", "split", out, "--val", "0.5", "--test", "0", "--stratify", "state", "--json")
    assert code == 0, err
    splits = json.loads(text)["splits"]
    assert sorted(splits["val"]) in (sorted(p) for p in [["normal-0", "bearing_wear-1"], ["normal-0", "bearing_wear-3"],
                                                         ["normal-2", "bearing_wear-1"], ["normal-2", "bearing_wear-3"]])
    code, _, err = cli("train", "--dataset", out, "--out", tmp_path / "run", *FAST_TRAIN)
    assert code == 0, err
    assert (tmp_path / "run" / "student.safetensors").is_file()


@pytest.mark.parametrize("uri,message", [
    ("lidar://0", "protocol 'lidar' not known"),
    ("replay://data/x", "record captures live sensors; replay:// is not one"),
    ("camera:///nonexistent/clip.avi", "no such video file '/nonexistent/clip.avi'"),
    ("camera://0?size=big", "size='big' is not HEIGHTxWIDTH"),
    ("audio://default?rat=8000", "unknown option 'rat' (did you mean 'rate'?)"),
    (str(REPO / "devices/examples/sources.yaml"), "cannot open serial port '/dev/edge-gmm/10c4_ea60_0001'"),
])
def test_bad_sources_exit_2_with_one_message(cli, tmp_path, uri, message):
    code, _, err = cli("record", "--sources", uri, "--out", tmp_path / "x", "--seconds", "1", "--label", "state=a",
                       "--classes", "state=a,b", "--start-timeout", "1")
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2 and message in line and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_run_refuses_a_uri_rate_or_size_that_differs_from_the_bundle():
    audio = SensorSpec("audio", "audio", 16000.0)
    with pytest.raises(ConfigError, match=r"rate=8000 differs from 'audio', which is 16000 Hz"):
        open_source("audio://default?rate=8000", [audio])
    open_source("audio://default?rate=16000", [audio])  # agreeing, or absent, is fine
    camera = SensorSpec("camera", "camera", 5.0, height=32, width=32)
    with pytest.raises(ConfigError, match=r"size=64x64 differs from 'camera', which is 32x32"):
        open_source("camera://0?size=64x64", [camera])
