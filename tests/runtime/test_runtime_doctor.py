"""`edge-gmm doctor`: golden windows written the way export writes them, run through a real ONNX Runtime engine and
compared; a stand-in engine that returns wrong numbers is refused (exit 2), one that cannot start exits 75."""

import json

import numpy as np
import pytest
from test_runtime_bundle import manifest_stub, tiny_onnx

from edge_gmm.devices import hostinfo
from edge_gmm.errors import DeviceError
from edge_gmm.export.pipeline import write_golden
from edge_gmm.runtime.bundle import Bundle, write_bundle
from edge_gmm.runtime.golden import GOLDEN_FILE, attach_golden, load_golden
from edge_gmm.runtime.runners import RUNNERS
from edge_gmm.runtime.runners.onnxrt import OnnxRuntimeRunner


class _Windows:
    """What export hands write_golden: evaluation windows (modality -> [W, ...]) and their mask."""

    def __init__(self, n=40, seed=0):
        rng = np.random.default_rng(seed)
        self.inputs = {"imu": rng.normal(size=(n, 4, 8)).astype(np.float32) + rng.normal(size=(n, 4, 1)).astype(np.float32)}
        self.mask = np.ones((n, 1), np.float32)


@pytest.fixture
def golden_bundle(tmp_path):
    """A bundle written as export writes it: artifacts + golden.npz through write_golden and write_bundle."""
    src = tiny_onnx(tmp_path / "src.onnx")
    m = manifest_stub()
    m["golden"], path = write_golden(tmp_path, src, {"fp32": src}, _Windows(), ["imu"], 1, m["inputs"], m["outputs"])
    return write_bundle(tmp_path / "bundle", m, {"fp32": src}, extra_files={GOLDEN_FILE: path})


def test_export_writes_golden_windows_that_are_hashed_and_match_the_fp32_model(golden_bundle):
    b = Bundle.open(golden_bundle)
    assert GOLDEN_FILE in b.verify() and GOLDEN_FILE in b.manifest["files"]
    g = load_golden(b)
    assert len(g.feeds) == 32 and g.windows == 32 and g.export_error == {"fp32": 0.0}
    with OnnxRuntimeRunner(b) as r:
        got = r.infer(g.feeds[5])
    np.testing.assert_allclose(got["logits_state"], g.references["logits_state"][5], rtol=1e-6)
    assert len({int(v.argmax()) for v in g.references["logits_state"]}) > 1  # the windows are not all one class


def test_doctor_passes_the_onnxrt_engine_and_reports_platform_agreement_and_latency(golden_bundle, cli):
    code, out, err = cli("doctor", "--bundle", golden_bundle, "--runner", "onnxrt", "--runs", "20", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["result"] == "pass" and r["runner"]["runner"] == "onnxrt" and r["runner"]["precision"] == "fp32"
    assert set(r["platform"]) >= {"l4t", "jetpack", "tensorrt", "cuda", "power_mode", "mem_available_mb", "python"}
    assert r["golden"]["agreement"] == {"state": 1.0} and max(r["golden"]["max_error"].values()) < 1e-6
    assert r["golden"]["error_bound"] == 1e-2 and r["golden"]["min_agreement"] == pytest.approx(0.99 - 1 / 32)
    assert r["latency"]["runs"] == 20 and 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"]
    code, out, _ = cli("doctor", "--bundle", golden_bundle)  # the text form
    assert code == 0 and "top-1 agreement state 100.0%" in out and "result:   pass" in out


class _WrongEngine(OnnxRuntimeRunner):
    """A stand-in engine (registered as `tensorrt`) that computes, but not the model: the logits are shuffled."""

    name = "tensorrt"

    def __init__(self, bundle, *, precision=None, **_):
        super().__init__(bundle, precision=precision)

    def _infer_impl(self, feed):
        out = super()._infer_impl(feed)
        out["logits_state"] = out["logits_state"][..., ::-1] * 1.5
        return out


def test_an_engine_that_returns_wrong_numbers_is_refused(golden_bundle, cli, monkeypatch):
    monkeypatch.setitem(RUNNERS._table, "tensorrt", _WrongEngine)
    code, out, err = cli("doctor", "--bundle", golden_bundle, "--runner", "tensorrt", "--json")
    assert code == 2
    r = json.loads(out)
    assert r["result"] == "mismatch" and r["golden"]["agreement"]["state"] < 0.9
    assert any("logits_state" in f for f in r["golden"]["failures"])
    assert "this engine is not the model you validated" in err and "Traceback" not in err


class _DeadGpu(OnnxRuntimeRunner):
    def __init__(self, bundle, *, precision=None, **_):
        super().__init__(bundle, precision=precision)

    def _activate_impl(self):
        raise DeviceError("cudaMalloc failed: out of memory")


def test_a_runner_that_fails_on_the_device_exits_75_with_the_report(golden_bundle, cli, monkeypatch):
    monkeypatch.setitem(RUNNERS._table, "tensorrt", _DeadGpu)
    code, out, err = cli("doctor", "--bundle", golden_bundle, "--runner", "tensorrt", "--json")
    assert code == 75
    r = json.loads(out)
    assert r["result"] == "runtime-failure" and "out of memory" in r["error"] and r["platform"]["python"]


def test_a_bundle_without_golden_windows_still_runs_and_says_so(tmp_path, cli):
    old = write_bundle(tmp_path / "old", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "m.onnx")})
    code, out, err = cli("doctor", "--bundle", old, "--runner", "onnxrt")
    assert code == 0, err
    assert "none in this bundle" in out and "not checked" in out and "result:   no-golden" in out and "p50" in out


def test_golden_references_changed_after_export_fail_verification(golden_bundle, cli):
    with np.load(golden_bundle / GOLDEN_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["output_0"] = arrays["output_0"] + 1
    np.savez(golden_bundle / GOLDEN_FILE, **arrays)
    code, _, err = cli("doctor", "--bundle", golden_bundle, "--runner", "onnxrt")
    assert code == 2 and GOLDEN_FILE in err and "sha256" in err


def test_re_signed_wrong_references_are_caught_by_the_comparison(golden_bundle, tmp_path, cli):
    from edge_gmm.runtime.bundle import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    g = load_golden(Bundle.open(golden_bundle))
    refs = {k: v[..., ::-1].copy() for k, v in g.references.items()}
    attach_golden(golden_bundle, g.feeds, refs, sign_key=key)
    code, out, err = cli("doctor", "--bundle", golden_bundle, "--runner", "onnxrt", "--pubkey", pub)
    assert code == 2 and "result:   mismatch" in out and "not the model you validated" in err


def test_golden_shapes_are_checked_against_the_manifest(golden_bundle):
    from edge_gmm.errors import BundleError
    from edge_gmm.runtime.bundle import sha256_file, write_manifest

    with np.load(golden_bundle / GOLDEN_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["input_0"] = arrays["input_0"][:, :, :, :4]
    np.savez(golden_bundle / GOLDEN_FILE, **arrays)
    m = json.loads((golden_bundle / "manifest.json").read_text())
    m["files"][GOLDEN_FILE] = sha256_file(golden_bundle / GOLDEN_FILE)
    write_manifest(golden_bundle, m)
    with pytest.raises(BundleError, match="input_0 is float32 .* needs float32 \\(N, 1, 4, 8\\)"):
        load_golden(Bundle.open(golden_bundle))


def test_platform_facts_from_tegra_release_and_meminfo(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    assert hostinfo.l4t_version(str(rel)) == "35.4.1" and hostinfo.jetpack_of("35.4.1") == "5.1.2"
    assert hostinfo.jetpack_of("36.4.0") == "6.1" and hostinfo.jetpack_of("36.4.3") == "6.2"
    assert hostinfo.jetpack_of("99.1") is None and hostinfo.l4t_version(str(tmp_path / "absent")) is None
    mem = tmp_path / "meminfo"
    mem.write_text("MemTotal:  7999999 kB\nMemAvailable:    2097152 kB\n")
    assert hostinfo.mem_available_mb(str(mem)) == 2048
