"""Stream decoder robustness: corruption of every kind is counted, every intact frame comes out, in order."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gmm.firmware_bridge.decoder import StreamDecoder
from edge_gmm.firmware_bridge.faults import FaultInjector
from edge_gmm.firmware_bridge.protocol import FrameType, SampleFormat, encode_frame, samples_frame


def frames(n, start_seq=0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        values = rng.integers(-300, 300, size=(int(rng.integers(1, 12)), 6))
        out.append(encode_frame(samples_frame(1, values, SampleFormat.INT16, seq=(start_seq + i) & 0xFFFF, t_us=i * 5000)))
    return out


def feed_in_chunks(decoder, data, rng):
    got, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, 300))
        got += decoder.feed(data[i : i + n])
        i += n
    return got


def test_injected_faults_lose_only_the_spoiled_frames_and_count_them():
    wire = frames(2000)
    faults = FaultInjector(["bitflip", "drop", "garbage"], rate=0.1, seed=3)
    stream = b"".join(faults.apply(f, seq) for seq, f in enumerate(wire))
    dec = StreamDecoder()
    got = feed_in_chunks(dec, stream, np.random.default_rng(1))
    spoiled = set(faults.spoiled)
    assert len(spoiled) > 150
    assert [f.seq for f in got] == [s for s in range(2000) if s not in spoiled]  # intact ones, in order
    s = dec.stats
    assert s.frames == 2000 - len(spoiled)
    first, last = got[0].seq, got[-1].seq
    assert s.gaps == sum(first < q < last for q in spoiled)  # every frame lost between good ones is a gap
    assert s.crc_errors + s.malformed >= len(spoiled)  # garbage bursts with zeros add pieces of their own
    assert s.resyncs > 0 and s.bytes_dropped > 0


def test_resync_within_one_frame_after_a_corrupt_byte():
    wire = frames(4)
    bad = bytearray(wire[1])
    bad[5] ^= 0x40
    dec = StreamDecoder()
    got = dec.feed(wire[0] + bytes(bad) + wire[2] + wire[3])
    assert [f.seq for f in got] == [0, 2, 3]
    assert (dec.stats.crc_errors + dec.stats.malformed, dec.stats.resyncs) == (1, 1)


def test_truncated_frame_is_counted_and_the_next_is_kept():
    wire = frames(3)
    dec = StreamDecoder()
    got = dec.feed(wire[0] + wire[1][: len(wire[1]) // 2] + b"\x00" + wire[2])
    assert [f.seq for f in got] == [0, 2]
    assert dec.stats.crc_errors + dec.stats.malformed == 1 and dec.stats.gaps == 1


def test_sequence_wraps_without_a_gap():
    dec = StreamDecoder()
    got = dec.feed(b"".join(frames(12, start_seq=65530)))
    assert [f.seq for f in got] == [*range(65530, 65536), *range(0, 6)]
    assert dec.stats.gaps == 0


def test_partial_first_piece_after_connect_is_not_an_error():
    wire = frames(3)
    dec = StreamDecoder()
    got = dec.feed(wire[0][7:] + wire[1] + wire[2])  # we joined mid-frame
    assert [f.seq for f in got] == [1, 2]
    assert dec.stats.crc_errors == dec.stats.malformed == 0 and dec.stats.bytes_dropped == len(wire[0]) - 7


def test_endless_noise_without_delimiters_is_bounded():
    dec = StreamDecoder()
    for _ in range(50):
        assert dec.feed(b"\x55" * 1000) == []
    assert len(dec._buf) < 5000
    assert [f.seq for f in dec.feed(b"\x00" + frames(1)[0])] == [0]


def test_unknown_frame_type_is_skipped_and_counted():
    from edge_gmm.firmware_bridge.protocol import Frame

    dec = StreamDecoder()
    got = dec.feed(encode_frame(Frame(type=99, seq=0)) + frames(2, start_seq=1)[1])
    assert [f.seq for f in got] == [2] and dec.stats.unsupported == 1 and dec.stats.gaps == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_fuzz_arbitrary_bytes_never_crash(noise, chunk):
    dec = StreamDecoder()
    for i in range(0, len(noise), chunk):
        for f in dec.feed(noise[i : i + chunk]):
            assert f.type in set(FrameType)
    s = dec.stats
    assert s.bytes_in == len(noise)
    assert s.bytes_dropped <= len(noise)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=20), st.integers(0, 2**32 - 1))
def test_fuzz_delimited_garbage_between_frames_never_hides_a_frame(garbage, seed):
    # any garbage that ends with a delimiter (a burst on an idle line) must not cost an intact frame
    wire = frames(len(garbage), seed=seed % 1000)
    stream = b"".join(g + b"\x00" + f for g, f in zip(garbage, wire))
    dec = StreamDecoder()
    got = feed_in_chunks(dec, stream, np.random.default_rng(seed))
    seqs = [f.seq for f in got]
    assert seqs[-len(wire):] == list(range(len(wire))) or seqs == list(range(len(wire)))
    assert all(f.type in set(FrameType) for f in got)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 16, 77]), st.integers(0, 3), st.integers(0, 5),
                          st.integers(0, 40), st.binary(max_size=120)), max_size=30))
def test_fuzz_crc_valid_frames_with_nonsense_payloads_never_crash_the_link(specs):
    # a firmware bug gives frames whose CRC is fine but whose payload lies; the link counts them and goes on
    from edge_gmm.firmware_bridge.link import FrameLink
    from edge_gmm.firmware_bridge.protocol import Descriptor, Frame, descriptor_frame

    link = FrameLink()
    data = encode_frame(descriptor_frame(Descriptor(1, "imu", "imu", 100.0, 3, SampleFormat.INT16, 1.0, []), seq=0))
    for i, (ftype, sensor, fmt, count, payload) in enumerate(specs):
        data += encode_frame(Frame(ftype, sensor, i + 1, i * 1000, fmt, count, payload))
    for c in link.feed(data, 1000.0):
        assert c.x.dtype == np.float32 and c.x.shape == (len(c.t), 3)
    assert link.stats.frames == len(specs) + 1 - link.stats.unsupported


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 50))
def test_fuzz_forwarder_lines_never_crash(noise, chunk):
    from edge_gmm.firmware_bridge.forwarder import ForwarderLink

    link = ForwarderLink(frequency=50)
    for i in range(0, len(noise), chunk):
        for c in link.feed(noise[i : i + chunk], 10.0 + i / 1000):
            assert c.x.shape == (len(c.t), link.channels)
