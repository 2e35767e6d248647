"""Frame codec: COBS, CRC, payloads; C and Python agree byte for byte on every shared vector."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gmm.firmware_bridge.cobs import CobsError, cobs_decode, cobs_encode, max_encoded_len
from edge_gmm.firmware_bridge.decoder import StreamDecoder
from edge_gmm.firmware_bridge.protocol import (
    Descriptor,
    FrameType,
    SampleFormat,
    descriptor_frame,
    encode_frame,
    parse_descriptor,
    samples_frame,
)
from edge_gmm.firmware_bridge.vectors import VECTOR_DIR, encode_vectors, load_vectors

FW = Path(__file__).resolve().parents[2] / "firmware_bridge"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    enc = cobs_encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= max_encoded_len(len(data))
    assert cobs_decode(enc) == data


def test_cobs_254_byte_run_boundaries():
    for n in (253, 254, 255, 508, 509):
        data = b"\x01" * n
        assert cobs_decode(cobs_encode(data)) == data
    assert cobs_encode(b"\x11" * 254) == b"\xff" + b"\x11" * 254 + b"\x01"


def test_cobs_rejects_block_past_end():
    with pytest.raises(CobsError):
        cobs_decode(b"\x05ab")


def test_frame_round_trip_all_sample_formats():
    for fmt, values in [
        (SampleFormat.INT16, np.array([[1, -2, 3], [-32768, 32767, 0]])),
        (SampleFormat.INT32, np.array([[2**31 - 1, -(2**31), 7]])),
        (SampleFormat.FLOAT32, np.array([[0.5, -1.25, 3e30]])),
    ]:
        f = samples_frame(4, values, fmt, seq=9, t_us=123)
        (got,) = StreamDecoder().feed(encode_frame(f))
        assert (got.type, got.sensor, got.seq, got.t_us, got.count, got.format) == (FrameType.SAMPLES, 4, 9, 123, len(values), fmt)
        assert got.payload == f.payload


def test_descriptor_round_trip_and_forward_compatible_trailing_bytes():
    d = Descriptor(3, "imu", "imu", 200.0, 6, SampleFormat.INT16, 0.5, ["g", "g", "g", "dps", "dps", "dps"])
    f = descriptor_frame(d)
    assert parse_descriptor(f) == d
    f.payload += b"\x01\x02future-field"  # a later minor version appends fields; this reader ignores them
    assert parse_descriptor(f) == d
    assert d.spec().channels == 6 and d.spec().units[3] == "dps"


def test_truncated_descriptor_is_refused():
    f = descriptor_frame(Descriptor(1, "imu", "imu", 200.0, 6, 1, 1.0, []))
    f.payload = f.payload[:12]
    with pytest.raises(ValueError):
        parse_descriptor(f)


def test_python_encoder_matches_committed_vectors():
    assert encode_vectors() == (VECTOR_DIR / "expected.txt").read_text()


def test_committed_vectors_decode_to_their_fields():
    decoder = StreamDecoder()
    lines = (VECTOR_DIR / "expected.txt").read_text().split()
    stream = b"".join(bytes.fromhex(h) for h in lines[1::2])
    frames = decoder.feed(stream)
    expected = [f for _, f in load_vectors()]
    assert [(f.type, f.seq, f.t_us, f.payload) for f in frames] == [(f.type, f.seq, f.t_us & 0xFFFFFFFF, f.payload) for f in expected]
    assert decoder.stats.crc_errors == decoder.stats.malformed == 0


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("gcc") is None, reason="needs make and gcc")
def test_c_library_matches_python_on_every_vector():
    subprocess.run(["make", "-s", "-C", str(FW), "build/egb_vectors"], check=True, capture_output=True)
    out = subprocess.run([str(FW / "build/egb_vectors"), str(VECTOR_DIR / "vectors.txt")], check=True, capture_output=True, text=True)
    assert out.stdout == encode_vectors()
    assert len(out.stdout.splitlines()) == len(load_vectors())


@pytest.mark.skipif(shutil.which("socat") is None or shutil.which("gcc") is None, reason="needs socat and gcc")
def test_c_example_streams_over_a_socat_pty_to_the_python_reader(tmp_path):
    import time

    from edge_gmm.firmware_bridge.source import open_bridge

    subprocess.run(["make", "-s", "-C", str(FW), "build/egb_stream"], check=True, capture_output=True)
    link = tmp_path / "ttyC"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={link}", f"EXEC:{FW / 'build/egb_stream'} 2.2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # DESCRIBE on connect: egb_stream answers with its descriptor at once (pyserial flushes older input on open)
        r = open_bridge(str(link), wait_for_port=True, backoff_s=(0.02, 0.05)).start()
        got, deadline = [], time.monotonic() + 5
        while time.monotonic() < deadline and sum(len(c) for c in got) < 300:
            got += r.chunks(timeout=0.1)
        s = r.stats()
        r.stop()
    finally:
        socat.terminate()
        socat.wait(5)
    assert [x.name for x in r.sensors()] == ["imu"]
    x = np.concatenate([c.x for c in got])
    assert x.shape[1] == 6 and len(x) >= 300, s
    assert abs(float(np.median(x[:, 2])) - 9.81) < 0.5  # gravity on z, scaled by the descriptor's scale
    assert s["crc_errors"] == s["malformed"] == s["gaps"] == 0
