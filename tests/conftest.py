"""Shared fixtures: real services started on free loopback ports and stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _mosquitto_bin() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


class Mosquitto:
    """A real mosquitto on a loopback port. `max_queued_messages 0`: the default 1000 drops QoS1 (FIELD-NOTES)."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = ""):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 0",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            f"log_dest file {self.workdir}/mosquitto.log",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n" + self.extra)
        self.proc = subprocess.Popen([_mosquitto_bin(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    if not _mosquitto_bin():
        pytest.fail("mosquitto is not installed; run scripts/setup.sh")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def cli(capsys):
    """Run `edge-gmm ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from edge_gmm.cli.main import main

    def _run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@contextmanager
def torch_on_one_thread():
    """The suite shares 2 cores with subprocesses, and more torch threads only spin against each other there
    (2 spinning threads made a brief training 25x slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    with torch_on_one_thread():
        yield


TINY_MODALITIES = ["imu", "audio"]


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """The export tests' student-tiny on machine-health's imu + audio, trained once for the session:
    (dataset, its training windows, a `fresh()` that builds a new model with the trained weights)."""
    import torch

    from edge_gmm.config import ModelSpec
    from edge_gmm.data.synth import synthesize
    from edge_gmm.data.windowing import make_windows
    from edge_gmm.model import build_model

    ds = synthesize("machine-health", tmp_path_factory.mktemp("tiny") / "ds", sessions_per_class=4, session_seconds=5.0)
    sensors = [s for s in ds.sensors if s.name in TINY_MODALITIES]
    spec = ModelSpec(preset="student-tiny", student="student-tiny")
    w = make_windows(ds, "train", ds.window, TINY_MODALITIES)
    with torch_on_one_thread():
        torch.manual_seed(0)
        state = train_briefly(build_model("student-tiny", sensors, ds.window, list(ds.tasks), spec), w, TINY_MODALITIES).state_dict()

    def fresh():
        model = build_model("student-tiny", sensors, ds.window, list(ds.tasks), spec)
        model.load_state_dict(state)
        return model.eval()

    return ds, w, fresh


def train_briefly(model, windows, modalities, steps: int = 150):
    """Export tests' model: normalization stats from `windows`, then `steps` AdamW steps on its 'state' labels; returns the model in eval."""
    import numpy as np
    import torch

    x = {m: torch.from_numpy(windows.inputs[m]) for m in modalities}
    mask = torch.from_numpy(windows.mask)
    with torch.no_grad():
        model.set_norm_stats(model.featurize(x, mask), mask)
    y = torch.from_numpy(windows.labels["state"])
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(y), 32))
        loss = torch.nn.functional.cross_entropy(model({m: x[m][i] for m in modalities}, mask[i])["logits_state"], y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
