"""Faults on the inference side and at the loop's end: each is counted and survived, or ends `run` with the exit
code a supervisor needs (0 clean, 2 user error, 75 restart may cure; errors.py).

Real parts: a real bundle run by onnxruntime, replayed datasets, mosquitto + mosquitto_sub. Faults are injected
at the interfaces the loop isolates (a thin wrapper around the real runner, post-processor, publisher or
assembler), or are real: a model that fails on real inputs, a corrupt dataset file, a disk read error.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import types

import numpy as np
import pytest

from edge_gmm.cli.main import COMMANDS
from edge_gmm.devices.job import RunSettings, run_device
from edge_gmm.devices.loop import REOPEN_AFTER, STOP_AFTER
from edge_gmm.devices.sources import SOURCES
from edge_gmm.devices.sources.playback import ReplaySource
from edge_gmm.errors import DeviceError, RuntimeFailure
from edge_gmm.runtime.runners import RUNNERS
from edge_gmm.runtime.runners.onnxrt import OnnxRuntimeRunner
from test_loop_kit import MqttSub, make_dataset, run_cli, small_dataset, tiny_bundle  # noqa: F401  (fixtures)

NO_ERRORS = {"infer": 0, "post": 0, "payload": 0, "publish": 0}


class FlakyRunner:
    """The real runner; `infer` raises on the chosen calls, or from the first call until the runner is reopened
    (`wedged`: a CUDA context or session in a bad state), or always."""

    def __init__(self, runner, fail_calls=(), wedged=False, always=False):
        self.runner, self.fail_calls, self.wedged, self.always = runner, set(fail_calls), wedged, always
        self.calls = self.activations = 0

    def __getattr__(self, name):  # name, inputs, outputs, precision, ...
        return getattr(self.runner, name)

    def infer(self, feed, check=True):
        self.calls += 1
        if self.always or self.wedged or self.calls in self.fail_calls:
            raise RuntimeError(f"injected failure on call {self.calls}")
        return self.runner.infer(feed, check=check)

    def deactivate(self):
        self.runner.deactivate()

    def activate(self):
        self.activations += 1
        self.wedged = False
        return self.runner.activate()


class RaisesOnce:
    """Calls `fn`, except on call number `on`, which raises."""

    def __init__(self, fn, on: int):
        self.fn, self.on, self.calls = fn, on, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        if self.calls == self.on:
            raise ValueError(f"injected failure on call {self.calls}")
        return self.fn(*a, **kw)


def replay(bundle, dataset, *, on_loop=None, loop=False, **kw) -> dict:
    settings = RunSettings(bundle=str(bundle), sources=f"replay://{dataset}{'?loop=1' if loop else ''}", mqtt="none",
                           device_id="faulty", speed=float("inf"), **kw)
    return run_device(settings, on_loop=on_loop)


@pytest.fixture(scope="module")
def clean(tiny_bundle, small_dataset):  # noqa: F811
    """The fault-free run the others are compared with."""
    s = replay(tiny_bundle, small_dataset)
    assert s["errors"] == NO_ERRORS and s["exit_code"] == 0 and s["predictions"] == s["windows"] >= 10
    return s


def test_failed_inferences_skip_their_windows_are_counted_and_logged_once(tiny_bundle, small_dataset, clean, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="edge_gmm.devices.loop")
    flaky = []

    def wrap(loop):
        flaky.append(FlakyRunner(loop.runner, fail_calls={3, 4}))
        loop.runner = flaky[0]

    s = replay(tiny_bundle, small_dataset, on_loop=wrap)
    assert (s["reason"], s["exit_code"]) == ("sources ended", 0)
    assert s["errors"] == {**NO_ERRORS, "infer": 2} and s["skipped_windows"] == 2
    assert s["windows"] == clean["windows"] and s["predictions"] == clean["predictions"] - 2
    assert s["runner_reopens"] == 0 and flaky[0].activations == 0
    assert sum("infer failed" in r.getMessage() for r in caplog.records) == 1  # not once per window


def test_a_wedged_runner_is_reopened_after_repeated_failures_and_predictions_resume(tiny_bundle, small_dataset):  # noqa: F811
    flaky = []

    def wrap(loop):
        flaky.append(FlakyRunner(loop.runner, wedged=True))
        loop.runner = flaky[0]

    s = replay(tiny_bundle, small_dataset, on_loop=wrap, loop=True, max_windows=5)
    assert (s["reason"], s["exit_code"]) == ("max-windows", 0)
    assert s["errors"]["infer"] == REOPEN_AFTER and s["runner_reopens"] == 1 and flaky[0].activations == 1
    assert s["predictions"] == 5  # the real runner, re-entered, did the work


def test_inference_that_keeps_failing_stops_with_the_restart_code(tiny_bundle, small_dataset):  # noqa: F811
    s = replay(tiny_bundle, small_dataset, loop=True,
               on_loop=lambda loop: setattr(loop, "runner", FlakyRunner(loop.runner, always=True)))
    assert (s["reason"], s["exit_code"]) == ("inference failing", 75)
    assert s["errors"]["infer"] == STOP_AFTER and s["runner_reopens"] == 1 and s["predictions"] == 0
    assert "injected failure" in s["error"]


@pytest.mark.parametrize("stage, attr", [("post", "post"), ("payload", "payload_fn")])
def test_a_post_processor_or_payload_that_raises_once_costs_one_window(tiny_bundle, small_dataset, clean, stage, attr):  # noqa: F811
    s = replay(tiny_bundle, small_dataset, on_loop=lambda loop: setattr(loop, attr, RaisesOnce(getattr(loop, attr), on=2)))
    assert (s["reason"], s["exit_code"]) == ("sources ended", 0)
    assert s["errors"] == {**NO_ERRORS, stage: 1} and s["predictions"] == clean["predictions"] - 1


def test_a_publish_that_raises_once_costs_one_prediction_and_the_rest_arrive_in_order(mosquitto, tiny_bundle, small_dataset, clean, tmp_path):  # noqa: F811
    sub = MqttSub(mosquitto.port, "edge-gmm/v1/pub1/prediction")
    time.sleep(0.3)  # mosquitto_sub subscribed
    settings = RunSettings(bundle=str(tiny_bundle), sources=f"replay://{small_dataset}", mqtt=mosquitto.url,
                           device_id="pub1", speed=float("inf"), spool_dir=str(tmp_path / "spool"), spool_max_mb=0.5)
    publishers = []

    def wrap(loop):
        publishers.append(loop.publish.__self__)
        loop.publish = RaisesOnce(loop.publish, on=3)

    s = run_device(settings, on_loop=wrap)
    assert publishers[0].spool_max_bytes == 512 * 1024  # --spool-max-mb reaches the spool
    n = s["predictions"]
    assert (s["exit_code"], s["errors"]) == (0, {**NO_ERRORS, "publish": 1}) and n == clean["predictions"] - 1
    assert s["publisher"]["acked"] == n
    deadline = time.monotonic() + 10
    while len(sub.messages) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p["seq"] for _, p in sub.stop()] == list(range(n))


class _BrokenMaker:
    """The loop's real window maker (token cache or whole-window assembler), failing when asked for windows: a
    bug in the assembly thread."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def pop_ready(self, *a, **kw):
        raise IndexError("injected assembler bug")


@pytest.mark.parametrize("whole_window", [False, True])
def test_an_assembly_error_exits_with_the_restart_code_not_0(tiny_bundle, small_dataset, whole_window):  # noqa: F811
    s = replay(tiny_bundle, small_dataset, whole_window=whole_window,
               on_loop=lambda loop: setattr(loop, "maker", _BrokenMaker(loop.maker)))
    assert (s["reason"], s["exit_code"]) == ("assembly error", 75) and "IndexError" in s["error"]


class _ReadErrorReplay(ReplaySource):
    """A replay whose disk fails (EIO) after a few chunks: a transport error, not the user's."""

    def stream(self, stop):
        for i, chunk in enumerate(super().stream(stop)):
            if i == 20:
                raise OSError(5, "Input/output error")
            yield chunk


def test_sources_down_for_good_exit_75_and_sources_that_all_failed_exit_2(tiny_bundle, small_dataset, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(SOURCES._table, "eio", _ReadErrorReplay)
    s = run_device(RunSettings(bundle=str(tiny_bundle), sources=f"eio://{small_dataset}", mqtt="none", device_id="eio"))
    assert (s["reason"], s["exit_code"]) == ("sources failed", 75) and "Input/output error" in s["error"]

    bad = tmp_path / "bad"  # a corrupt recording: replaying it again cannot help
    shutil.copytree(small_dataset, bad)
    for f in (bad / "sessions").glob("*/imu.x.npy"):
        f.write_bytes(b"not an array")
    r = run_cli("run", "--bundle", tiny_bundle, "--sources", f"replay://{bad}", "--mqtt", "none", "--speed", "max")
    assert r.returncode == 2, r.stderr
    assert "sources failed" in r.stderr and "imu.x.npy" in r.stderr and "Traceback" not in r.stderr


def _failing_model_bundle(out, like) -> str:
    """`like`'s manifest, with a model (the whole-window graph, and the fusion graph beside `like`'s encoders)
    that runs on zeros (the warm-up) but fails on real inputs: it gathers a row at index max|inputs| * 1e6, out
    of bounds for any real signal."""
    from edge_gmm.runtime.bundle import write_bundle

    manifest = json.loads((like / "manifest.json").read_text())
    (k,) = [t["shape"][1] for t in manifest["outputs"] if t["name"] == "logits_state"]
    whole = _failing_graph(manifest["inputs"], manifest["outputs"], k, out.parent / "fails.onnx")
    stream = None
    if manifest.get("stream"):
        graphs = manifest["stream"]["graphs"]
        stream = {g: {"fp32": like / spec["artifacts"]["fp32"]["file"]} for g, spec in graphs.items()}
        stream["fusion"] = {"fp32": _failing_graph(graphs["fusion"]["inputs"], graphs["fusion"]["outputs"], k,
                                                   out.parent / "fails.fusion.onnx")}
    return str(write_bundle(out, manifest, {"fp32": whole}, stream_artifacts=stream))


def _failing_graph(inputs: list[dict], outputs: list[dict], k: int, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    specs = {t["name"]: t["shape"] for t in inputs}
    (emb,) = [t["shape"] for t in outputs if t["name"] == "embedding"]
    names = [n for n in specs if n != "mask" and not n.startswith("mask_")]  # the data, not the masks
    nodes = [node for n in names for node in (helper.make_node("Abs", [n], [f"{n}_abs"]),
                                              helper.make_node("ReduceMax", [f"{n}_abs"], [f"{n}_peak"], keepdims=0))]
    nodes += [helper.make_node("Max", [f"{n}_peak" for n in names], ["peak"]),
              helper.make_node("Mul", ["peak", "scale"], ["scaled"]),
              helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
              helper.make_node("Gather", ["table", "index"], ["row"], axis=0),  # (K,)
              helper.make_node("Unsqueeze", ["row", "axis0"], ["logits_state"]),  # (1, K)
              helper.make_node("Identity", ["emb0"], ["embedding"])]
    inits = [numpy_helper.from_array(np.zeros((1, k), np.float32), "table"),
             numpy_helper.from_array(np.array(1e6, np.float32), "scale"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.zeros(emb, np.float32), "emb0")]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in specs.items()]
    outs = [helper.make_tensor_value_info("logits_state", TensorProto.FLOAT, (1, k)),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, tuple(emb))]
    model = helper.make_model(helper.make_graph(nodes, "fails-on-data", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_run_exits_75_with_one_error_line_when_the_model_fails_on_every_window(tiny_bundle, small_dataset, tmp_path):  # noqa: F811
    bundle = _failing_model_bundle(tmp_path / "fails", tiny_bundle)
    r = run_cli("run", "--bundle", bundle, "--sources", f"replay://{small_dataset}?loop=1", "--mqtt", "none",
                "--speed", "max", "--json")
    assert r.returncode == 75, r.stderr
    s = json.loads(r.stdout)
    assert s["reason"] == "inference failing" and s["errors"]["infer"] == STOP_AFTER and s["runner_reopens"] == 1
    assert "edge-gmm run: error: inference failing" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("infer failed") == 1


def test_spool_max_mb_must_be_positive(tiny_bundle, small_dataset, cli):  # noqa: F811
    for bad in ("0", "-1", "nan"):
        code, _, err = cli("run", "--bundle", tiny_bundle, "--sources", f"replay://{small_dataset}", "--mqtt",
                           "mqtt://127.0.0.1:1", "--spool-max-mb", bad)
        assert code == 2 and "--spool-max-mb must be a positive number" in err, err


class _GpuGoneRunner(OnnxRuntimeRunner):
    """The real ORT runner on a device whose GPU fails: at activation (as TensorRT's CUDA calls raise) or at the
    warm-up inference."""

    where = "activate"

    def _activate_impl(self):
        if self.where == "activate":
            raise DeviceError("CUDA call failed: 'cudaErrorDevicesUnavailable'")
        super()._activate_impl()

    def _infer_impl(self, feed):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize("where", ["activate", "warm-up"])
def test_a_device_fault_when_the_runner_starts_is_restartable_not_a_user_error(tiny_bundle, small_dataset, where, monkeypatch):  # noqa: F811
    monkeypatch.setattr(_GpuGoneRunner, "where", where)
    monkeypatch.setitem(RUNNERS._table, "gpu-gone", _GpuGoneRunner)
    with pytest.raises(RuntimeFailure, match="CUDA") as e:
        run_device(RunSettings(bundle=str(tiny_bundle), sources=f"replay://{small_dataset}", mqtt="none",
                               device_id="gpu", runner="gpu-gone"))
    assert e.value.exit_code == 75


def test_a_bug_prints_one_line_and_the_traceback_and_exits_1(cli, monkeypatch):
    bug = types.ModuleType("edge_gmm.cli._bug")
    bug.configure = lambda p: None
    bug.run = lambda args: {}["missing"]  # a KeyError nobody handles
    monkeypatch.setitem(sys.modules, "edge_gmm.cli._bug", bug)
    monkeypatch.setitem(COMMANDS, "bug", ("_bug", "a command with a bug"))
    code, _, err = cli("bug")
    assert code == 1
    assert err.splitlines()[0].startswith("edge-gmm bug: internal error: KeyError: 'missing'")
    assert "Traceback (most recent call last)" in err
