"""Bundle manifest, tamper detection and ed25519 signatures, on a tiny hand-built ONNX (no torch)."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_gmm.errors import BundleError
from edge_gmm.runtime.bundle import Bundle, generate_keypair, load_schema, pack_tar, write_bundle

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def tiny_onnx(path):
    """logits_state = imu.mean(-1) @ W * mask[:, :1]; embedding = the mean; shapes static, batch 1."""
    nodes = [
        helper.make_node("ReduceMean", ["imu", "axes"], ["emb"], keepdims=0, name="pool"),
        helper.make_node("MatMul", ["emb", "W"], ["z"], name="head"),
        helper.make_node("Slice", ["mask", "s0", "s1", "s2"], ["m0"], name="mask_col"),
        helper.make_node("Mul", ["z", "m0"], ["logits_state"], name="gate"),
        helper.make_node("Identity", ["emb"], ["embedding"], name="emb_out"),
    ]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([1], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "s2")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("imu", TensorProto.FLOAT, [1, 4, 8]),
                                           helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1])],
                          [helper.make_tensor_value_info("logits_state", TensorProto.FLOAT, [1, 3]),
                           helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path


def manifest_stub():
    return {
        "model": {"name": "tiny", "version": "1", "flops": 2 * 4 * 3},
        "sensors": [{"name": "imu", "kind": "imu", "rate": 8.0, "channels": 4}],
        "modalities": ["imu"],
        "window": {"length_s": 1.0, "hop_s": 0.5},
        "tasks": [{"name": "state", "type": "classification", "labels": ["a", "b", "c"]}],
        "inputs": [{"name": "imu", "shape": [1, 4, 8], "dtype": "float32"}, {"name": "mask", "shape": [1, 1], "dtype": "float32"}],
        "outputs": [{"name": "logits_state", "shape": [1, 3], "dtype": "float32"}, {"name": "embedding", "shape": [1, 4], "dtype": "float32"}],
        "metrics": {"fp32": {"accuracy": {"state": 90.0}}},
        "lint": {"ok": True, "issues": []},
        "target": {"name": "cpu-onnx-fp32", "precision": "fp32", "batch": 1, "opset": 18},
    }


@pytest.fixture
def bundle_dir(tmp_path):
    src = tiny_onnx(tmp_path / "src.onnx")
    return write_bundle(tmp_path / "bundle", manifest_stub(), {"fp32": src})


def test_written_bundle_reads_back_and_verifies(bundle_dir):
    b = Bundle.open(bundle_dir)
    assert b.precisions == ["fp32"]
    assert b.artifact_path().name == "model.fp32.onnx"
    assert [t.name for t in b.inputs] == ["imu", "mask"] and b.inputs[0].shape == (1, 4, 8)
    assert b.sensors[0].channels == 4 and b.window.hop_s == 0.5 and b.tasks[0].labels == ["a", "b", "c"]
    assert "model.fp32.onnx" in b.verify()


def test_manifest_matches_the_json_schema(bundle_dir):
    jsonschema = pytest.importorskip("jsonschema")  # a dev dependency

    jsonschema.validate(json.loads((bundle_dir / "manifest.json").read_text()), load_schema())


def test_one_changed_byte_in_an_artifact_is_named(bundle_dir):
    f = bundle_dir / "model.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.fp32.onnx"):
        Bundle.open(bundle_dir).verify()


def test_an_edited_manifest_is_detected(bundle_dir):
    mpath = bundle_dir / "manifest.json"
    mpath.write_text(mpath.read_text().replace('"a"', '"x"'))
    with pytest.raises(BundleError, match="manifest.json"):
        Bundle.open(bundle_dir).verify()


def test_signature_verifies_and_rejects_wrong_key_and_missing_signature(tmp_path):
    priv, pub = generate_keypair(tmp_path / "keys")
    _, other_pub = generate_keypair(tmp_path / "keys", name="other")
    src = tiny_onnx(tmp_path / "src.onnx")
    signed = write_bundle(tmp_path / "signed", manifest_stub(), {"fp32": src}, sign_key=priv)
    assert "manifest.json.sig" in Bundle.open(signed).verify(pub)
    with pytest.raises(BundleError, match="signature"):
        Bundle.open(signed).verify(other_pub)
    unsigned = write_bundle(tmp_path / "unsigned", manifest_stub(), {"fp32": src})
    with pytest.raises(BundleError, match="not signed"):
        Bundle.open(unsigned).verify(pub)


def test_signed_manifest_edit_with_recomputed_checksum_still_fails_the_signature(tmp_path):
    import hashlib

    priv, pub = generate_keypair(tmp_path / "keys")
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "src.onnx")}, sign_key=priv)
    mpath = b / "manifest.json"
    mpath.write_text(mpath.read_text().replace('"a"', '"x"'))
    (b / "manifest.json.sha256").write_text(hashlib.sha256(mpath.read_bytes()).hexdigest() + "  manifest.json\n")
    Bundle.open(b).verify()  # a checksum alone cannot stop a deliberate edit ...
    with pytest.raises(BundleError, match="signature"):
        Bundle.open(b).verify(pub)  # ... the signature does


def test_tar_bundle_opens_and_engine_cache_sits_beside_it(bundle_dir, tmp_path):
    tar = pack_tar(bundle_dir, tmp_path / "b.tar")
    b = Bundle.open(tar)
    assert b.verify()
    assert b.engine_dir == tmp_path / "b.tar.engines"
    assert Bundle.open(bundle_dir).engine_dir == bundle_dir / "engines"


def test_cli_verify_exit_2_names_the_changed_file(bundle_dir, cli):
    code, out, _ = cli("bundle", "verify", bundle_dir)
    assert code == 0 and "ok" in out
    with open(bundle_dir / "model.fp32.onnx", "ab") as f:
        f.write(b"\0")
    code, _, err = cli("bundle", "verify", bundle_dir)
    assert code == 2 and "model.fp32.onnx" in err and "Traceback" not in err


def test_cli_inspect_shows_io_and_metrics(bundle_dir, cli):
    code, out, _ = cli("bundle", "inspect", bundle_dir)
    assert code == 0
    assert "logits_state" in out and "1x4x8" in out and "state 90.00" in out


def test_not_a_bundle_and_newer_format_are_clear_errors(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest_stub(), "format": "edge-gmm-bundle", "format_version": 99,
                                                        "artifacts": {"fp32": {"file": "m.onnx", "sha256": "0" * 64}}}))
    with pytest.raises(BundleError, match="newer"):
        Bundle.open(tmp_path)
