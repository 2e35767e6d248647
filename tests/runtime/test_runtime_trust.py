"""The trust model and hostile bundles: a device with a trusted key runs signed bundles only; every file the
runtime loads is covered; crafted manifests and .tar files are clear errors (exit 2), never a traceback or a
huge allocation. Real bundles, real ed25519 keys, the real CLI in-process.
"""

import hashlib
import io
import json
import os
import tarfile

import pytest
from test_runtime_bundle import manifest_stub, tiny_onnx

from edge_gmm.errors import BundleError, ConfigError
from edge_gmm.runtime.bundle import Bundle, generate_keypair, pack_tar, trusted_key_path, write_bundle


@pytest.fixture(autouse=True)
def device_home(tmp_path, monkeypatch):
    """$EDGE_GMM_HOME of the 'device' (never the real ~/edge-gmm)."""
    home = tmp_path / "edge-gmm-home"
    monkeypatch.setenv("EDGE_GMM_HOME", str(home))
    return home


@pytest.fixture
def keys(tmp_path):
    return generate_keypair(tmp_path / "keys")


def install_key(home, pub):
    (home / "trust").mkdir(parents=True, exist_ok=True)
    (home / "trust" / "bundle.pub").write_bytes(pub.read_bytes())


def swap_model_and_strip_signature(bundle, tmp_path):
    """What an attacker with write access does: another model, hashes recomputed, signature removed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    evil = onnx.load(str(tiny_onnx(tmp_path / "evil.onnx")))
    evil.graph.initializer[0].CopyFrom(numpy_helper.from_array(-np.ones((4, 3), np.float32), "W"))
    onnx.save(evil, str(bundle / "model.fp32.onnx"))
    m = json.loads((bundle / "manifest.json").read_text())
    m["artifacts"]["fp32"]["sha256"] = hashlib.sha256((bundle / "model.fp32.onnx").read_bytes()).hexdigest()
    mbytes = json.dumps(m).encode()
    (bundle / "manifest.json").write_bytes(mbytes)
    (bundle / "manifest.json.sha256").write_text(hashlib.sha256(mbytes).hexdigest() + "  manifest.json\n")
    (bundle / "manifest.json.sig").unlink()


def test_a_tampered_unsigned_bundle_is_refused_once_the_device_trusts_a_key(tmp_path, keys, device_home, cli):
    priv, pub = keys
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")}, sign_key=priv)
    swap_model_and_strip_signature(b, tmp_path)
    assert Bundle.open(b).verify_trusted()  # no key anywhere: hashes only, and they were recomputed
    install_key(device_home, pub)
    for args in (("bundle", "verify", b),
                 ("run", "--bundle", b, "--sources", "synth://machine-health", "--mqtt", "none", "--max-windows", "1")):
        code, _, err = cli(*args)
        assert code == 2, err
        assert "not signed" in err and str(device_home / "trust" / "bundle.pub") in err and "Traceback" not in err


def test_the_trusted_key_of_the_release_home_applies_to_current_and_releases(tmp_path, keys, device_home, cli):
    """deploy's tree: HOME/releases/R and HOME/current -> releases/R, whatever $EDGE_GMM_HOME says."""
    priv, pub = keys
    home = tmp_path / "deployed"
    src = tiny_onnx(tmp_path / "s.onnx")
    signed = write_bundle(home / "releases" / "good", manifest_stub(), {"fp32": src}, sign_key=priv)
    unsigned = write_bundle(home / "releases" / "bad", manifest_stub(), {"fp32": src})
    (home / "current").symlink_to("releases/bad")
    assert trusted_key_path(home / "current") is None
    install_key(home, pub)
    assert trusted_key_path(home / "current") == home / "trust" / "bundle.pub"
    assert not device_home.exists()
    for path in (unsigned, home / "current"):
        with pytest.raises(BundleError, match="not signed"):
            Bundle.open(path).verify_trusted()
    code, out, _ = cli("bundle", "verify", signed)
    assert code == 0 and "signature ok (this device's trusted key" in out
    with pytest.raises(BundleError, match="signature does not match"):
        Bundle.open(write_bundle(home / "releases" / "x", manifest_stub(), {"fp32": src},
                                 sign_key=generate_keypair(tmp_path / "x")[0])).verify_trusted()
    assert Bundle.open(signed).verify_trusted(pub)  # an explicit --pubkey is used as given


def test_symlinked_artifacts_and_files_outside_the_bundle_are_refused(tmp_path, cli):
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    real = tmp_path / "elsewhere.onnx"
    (b / "model.fp32.onnx").rename(real)
    (b / "model.fp32.onnx").symlink_to(real)
    code, _, err = cli("bundle", "verify", b)
    assert code == 2 and "symbolic link" in err and "model.fp32.onnx" in err

    m = json.loads((b / "manifest.json").read_text())
    for rel in ("../outside.bin", "/etc/passwd", "a/../../b"):
        (b / "manifest.json").write_text(json.dumps({**m, "files": {rel: "0" * 64}}))
        code, _, err = cli("bundle", "verify", b)
        assert code == 2 and "outside the bundle" in err and "Traceback" not in err, rel


def _tar_with(path, member: tarfile.TarInfo, data: bytes = b""):
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
        tf.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_tar_members_outside_the_bundle_links_and_devices_exit_2(tmp_path, kind, cli):
    m = tarfile.TarInfo({"dotdot": "../evil.onnx", "absolute": "/tmp/evil.onnx"}.get(kind, "model.fp32.onnx"))
    if kind == "symlink":
        m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        m.type, m.linkname = tarfile.LNKTYPE, "manifest.json"
    elif kind == "device":
        m.type, m.devmajor, m.devminor = tarfile.CHRTYPE, 1, 3
    else:
        m.size = 4
    tar = _tar_with(tmp_path / "b.tar", m, b"evil" if m.size else b"")
    code, _, err = cli("bundle", "verify", tar)
    assert code == 2 and "Traceback" not in err and ("refusing the .tar" in err or "regular files only" in err), err
    assert not (tmp_path / "evil.onnx").exists() and not (tmp_path / "b.tar.d").exists()


def test_a_good_tar_still_opens(tmp_path):
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")})
    assert Bundle.open(pack_tar(b, tmp_path / "b.tar")).verify()


def _write_manifest(d, text: str):
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_text(text)
    return d


def test_a_deeply_nested_or_huge_manifest_is_refused_before_parsing(tmp_path, cli):
    deep = _write_manifest(tmp_path / "deep", "[" * 100_000 + "]" * 100_000)
    code, _, err = cli("bundle", "verify", deep)
    assert code == 2 and "nested deeper than" in err and "Traceback" not in err
    big = _write_manifest(tmp_path / "big", json.dumps({"pad": "x" * (5 << 20)}))
    code, _, err = cli("bundle", "inspect", big)
    assert code == 2 and "a manifest is at most" in err


def test_a_signed_manifest_declaring_a_huge_input_exits_2_before_any_allocation(tmp_path, keys, cli):
    priv, pub = keys
    b = write_bundle(tmp_path / "b", manifest_stub(), {"fp32": tiny_onnx(tmp_path / "s.onnx")}, sign_key=priv)
    m = json.loads((b / "manifest.json").read_text())
    m["inputs"][0]["shape"] = [1, 10**12]
    mbytes = json.dumps(m).encode()
    from edge_gmm.runtime.bundle import load_private_key

    (b / "manifest.json").write_bytes(mbytes)
    (b / "manifest.json.sha256").unlink()
    (b / "manifest.json.sig").write_bytes(load_private_key(priv).sign(mbytes))  # validly signed, still absurd
    for args in (("bundle", "verify", b, "--pubkey", pub),
                 ("run", "--bundle", b, "--sources", "synth://machine-health", "--mqtt", "none", "--pubkey", pub)):
        code, _, err = cli(*args)
        assert code == 2 and "inputs.imu: shape [1, 1000000000000]" in err and "at most" in err, err


@pytest.mark.parametrize("edit", [
    {"inputs": [{"name": "imu", "shape": 5, "dtype": "float32"}]},
    {"inputs": [{"name": "imu", "shape": [True, 4], "dtype": "float32"}]},
    {"inputs": [{"name": "imu", "shape": [1, 4], "dtype": "complex128"}]},
    {"outputs": "logits"},
    {"model": []},
    {"sensors": {"imu": 1}},
    {"target": ["fp32"]},
    {"files": ["a"]},
    {"artifacts": {"fp32": {"file": 7, "sha256": "0" * 64}}},
    {"artifacts": {"fp32": {"file": "m.onnx", "sha256": None}}},
])
def test_wrongly_typed_manifest_fields_are_bundle_errors(tmp_path, edit):
    m = {**manifest_stub(), "format": "edge-gmm-bundle", "format_version": 1,
         "artifacts": {"fp32": {"file": "m.onnx", "sha256": "0" * 64}}, **edit}
    with pytest.raises(BundleError):
        Bundle.open(_write_manifest(tmp_path / "b", json.dumps(m)))


def test_keygen_refuses_to_replace_a_key_without_force(tmp_path, cli):
    code, _, err = cli("bundle", "keygen", "--out", tmp_path / "k")
    assert code == 0, err
    before = (tmp_path / "k" / "bundle.key").read_bytes()
    code, _, err = cli("bundle", "keygen", "--out", tmp_path / "k")
    assert code == 2 and "already exists" in err and "--force" in err
    assert (tmp_path / "k" / "bundle.key").read_bytes() == before
    with pytest.raises(ConfigError):
        generate_keypair(tmp_path / "k")
    code, _, _ = cli("bundle", "keygen", "--out", tmp_path / "k", "--force")
    assert code == 0 and (tmp_path / "k" / "bundle.key").read_bytes() != before
    assert os.stat(tmp_path / "k" / "bundle.key").st_mode & 0o777 == 0o600
