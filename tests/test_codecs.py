"""The streaming codec layer (issue 26): bit-exact G.711, cut-independent MP3/Ogg decoding,
raw Opus packets of any duration with concealment, sniffing, one decoder per response."""

from __future__ import annotations

import random
import sys
import warnings

import numpy as np
import pytest

from agentd.audio import codecs
from agentd.audio.codecs import g711, mp3, ogg
from agentd.audio.codecs import opus as opus_codec
from agentd.audio.pcm import to_int16
from agentd.downlink import Downlink
from agentd.sim import wire as sim_wire
from agentd.sim.mp3enc import ENCODER_DELAY, Mp3Encoder


def speechlike(rate: int, seconds: float = 2.0, seed: int = 1) -> bytes:
    """A gliding tone with noise and a click: any cut or shift shows in the samples."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.03 * rng.standard_normal(len(t))
    x[rate // 10] += 0.6
    return to_int16(x)


def cuts(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 700)
        out.append(data[i : i + n])
        i += n
    return out


def decode_all(dec: codecs.Decoder, pieces: list[bytes]) -> bytes:
    return b"".join(dec.feed(p) for p in pieces) + dec.flush()


# ------------------------------------------------------------------ G.711


def test_g711_known_vectors() -> None:
    """Vectors as audioop (Sun g711.c) gives them: silence, -1, ±1000, full scale."""
    ulaw_enc, ulaw_dec = g711.tables("ulaw")
    alaw_enc, alaw_dec = g711.tables("alaw")
    pcm = np.array([0, -1, 1000, -1000, np.iinfo(np.int16).max, np.iinfo(np.int16).min], "<i2")
    assert ulaw_enc[pcm.view(np.uint16)].tolist() == [0xFF, 0x7E, 0xCE, 0x4E, 0x80, 0x00]
    assert alaw_enc[pcm.view(np.uint16)].tolist() == [0xD5, 0x55, 0xFA, 0x7A, 0xAA, 0x2A]
    assert ulaw_dec[[0xFF, 0x80, 0x00]].tolist() == [0, 32124, -32124]
    assert alaw_dec[[0xD5, 0xAA, 0x2A]].tolist() == [8, 32256, -32256]


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="audioop was removed in Python 3.13")
def test_g711_is_bit_exact_with_audioop_for_every_sample_and_code() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    every = np.arange(65536, dtype=np.uint16).view(np.int16).astype("<i2").tobytes()
    for law, lin2, tolin in (
        ("ulaw", audioop.lin2ulaw, audioop.ulaw2lin),
        ("alaw", audioop.lin2alaw, audioop.alaw2lin),
    ):
        (packet,) = g711.G711Encoder(law).encode(every)
        assert packet == lin2(every, 2), law
        assert g711.G711Decoder(law).feed(bytes(range(256))) == tolin(bytes(range(256)), 2), law


# ------------------------------------------------------------------ MP3


@pytest.fixture(scope="module")
def mp3_stream() -> tuple[bytes, bytes]:
    pcm = speechlike(24000)
    enc = Mp3Encoder(24000, 48)
    return pcm, enc.encode(pcm) + enc.flush()


def test_mp3_is_xstar_shaped_headerless_144_byte_frames(mp3_stream: tuple[bytes, bytes]) -> None:
    _, stream = mp3_stream
    assert stream[:2] == b"\xff\xf3"  # MPEG-2 Layer III sync, no ID3/Xing
    assert codecs.sniff(stream, "mp3") == "mp3" and len(stream) % 144 == 0


def test_mp3_decodes_bit_identically_however_cut(mp3_stream: tuple[bytes, bytes]) -> None:
    _, stream = mp3_stream
    whole = decode_all(mp3.Mp3Decoder(24000), [stream])
    assert len(whole) // 2 == len(stream) // 144 * 576 - 529  # every frame, less mpg123's delay
    frames = [stream[i : i + 144] for i in range(0, len(stream), 144)]
    dec = mp3.Mp3Decoder(24000)
    assert decode_all(dec, frames) == whole
    rng = random.Random(26)
    for _ in range(20):
        dec.reset()
        assert decode_all(dec, cuts(stream, rng)) == whole


def test_mp3_first_frame_decodes_without_waiting_for_the_second(
    mp3_stream: tuple[bytes, bytes],
) -> None:
    """mpg123's read-ahead held a stream's first frame until the second arrived (fed one
    24 ms frame per delta: [0, 1152, 576, …] samples); a stream that opens on a frame header
    gives each frame as it comes, even when its first header arrives cut in pieces."""
    _, stream = mp3_stream
    dec = mp3.Mp3Decoder(24000, trim=False)
    got = [len(dec.feed(stream[i : i + 144])) // 2 for i in range(0, 5 * 144, 144)]
    assert got == [576] * 5, got
    dec.reset()
    got = [len(dec.feed(d)) // 2 for d in (stream[:1], stream[1:3], stream[3:144])]
    assert got == [0, 0, 576], got
    # trimmed, the first frame still gives its samples past the decoder's own delay (529)
    trimmed = mp3.Mp3Decoder(24000)
    assert [len(trimmed.feed(stream[i : i + 144])) // 2 for i in (0, 144)] == [576 - 529, 576]
    assert trimmed.lead == 529  # mpg123's MPG123_DEC_DELAY, not a constant of ours


def content_offset(got: bytes, src: bytes) -> int:
    """Where the source's first 200 ms (a click at 100 ms) sits in the decoded output."""
    y = np.frombuffer(got, "<i2").astype(float)
    x = np.frombuffer(src, "<i2").astype(float)
    return int(np.argmax(np.correlate(y[:9600], x[:4800], "valid")))


def test_mp3_trims_the_decoders_delay_so_content_is_offset_by_the_encoders_only(
    mp3_stream: tuple[bytes, bytes],
) -> None:
    """Without a tag the encoder's delay is unknown and stays in the stream: the decoder cuts
    only its own 529 samples, so the source's sample n is output sample n + 576 (LAME's
    delay), exactly; untrimmed, it is n + 576 + 529."""
    pcm, stream = mp3_stream
    assert content_offset(mp3.Mp3Decoder(24000).feed(stream), pcm) == ENCODER_DELAY
    raw = mp3.Mp3Decoder(24000, trim=False).feed(stream)
    assert content_offset(raw, pcm) == ENCODER_DELAY + 529


@pytest.fixture(scope="module")
def tagged_stream() -> tuple[bytes, bytes]:
    """The same source with LAME's Info tag (80 kbit/s: LAME has no room for it below)."""
    pcm = speechlike(24000)
    enc = Mp3Encoder(24000, 80, tag=True)
    stream = enc.encode(pcm) + enc.flush()
    tag = enc.lametag()
    assert stream[4 : len(tag)] == bytes(len(tag) - 4)  # the blank frame left for the tag
    assert tag[:2] == b"\xff\xf3" and b"Info" in tag and b"LAME" in tag
    return pcm, tag + stream[len(tag) :]


def test_a_lame_tag_is_honoured_so_the_output_is_the_source_sample_for_sample(
    tagged_stream: tuple[bytes, bytes],
) -> None:
    """mpg123's gapless mode reads the tag's encoder delay and padding and cuts them with its
    own delay; the decoder then cuts nothing more: offset 0, length exact, however cut."""
    pcm, stream = tagged_stream
    dec = mp3.Mp3Decoder(24000)
    whole = decode_all(dec, [stream])
    assert dec.lead == 0
    assert content_offset(whole, pcm) == 0 and len(whole) == len(pcm)
    rng = random.Random(3)
    for _ in range(5):
        dec.reset()
        assert decode_all(dec, cuts(stream, rng)) == whole
    raw = mp3.Mp3Decoder(24000, trim=False).feed(stream)  # gapless off: every sample
    assert content_offset(raw, pcm) == ENCODER_DELAY + 529


def test_the_trim_is_by_sample_count_so_no_cut_in_the_first_frames_changes_it(
    mp3_stream: tuple[bytes, bytes],
) -> None:
    """The decoder's delay is cut from the stream's first samples whatever the first deltas
    hold: a first delta of 1 byte, of a frame and a bit, of three frames give the same."""
    _, stream = mp3_stream
    dec = mp3.Mp3Decoder(24000)
    whole = decode_all(dec, [stream])
    for cut in (*range(1, 5), *range(140, 150), 288, 300, 431, 432, 433, 700):
        dec.reset()
        assert decode_all(dec, [stream[:cut], stream[cut:]]) == whole, cut
        dec.reset()
        small = [stream[i : i + cut] for i in range(0, 3 * 144, cut)]
        assert decode_all(dec, [*small, stream[len(b"".join(small)) :]]) == whole, cut


def test_decoding_each_delta_alone_garbles_mp3(mp3_stream: tuple[bytes, bytes]) -> None:
    """Why one persistent decoder per response: per-delta decoders lose audio."""
    _, stream = mp3_stream
    whole = mp3.Mp3Decoder(24000, trim=False).feed(stream)
    alone = b"".join(
        mp3.Mp3Decoder(24000, trim=False).feed(stream[i : i + 700])
        for i in range(0, len(stream), 700)
    )
    assert alone != whole


# ------------------------------------------------------------------ Opus


def correlation(a: bytes, b: bytes) -> float:
    x = np.frombuffer(a, "<i2").astype(float)
    y = np.frombuffer(b, "<i2").astype(float)
    n = min(len(x), len(y))
    return float(np.corrcoef(x[:n], y[:n])[0, 1])


@pytest.mark.parametrize("ms", [20, 60, 120])
def test_raw_opus_packets_of_any_duration_decode_whole(ms: int) -> None:
    pcm = speechlike(16000)
    enc = codecs.encoder("opus", 16000, frame_ms=ms, bitrate=24000)
    packets = enc.encode(pcm) + enc.flush()
    dec = codecs.decoder("opus", 16000)
    out = decode_all(dec, packets)
    assert dec.kind == "opus"
    skip = opus_codec.PRE_SKIP_48K // 3
    assert len(out) // 2 == len(packets) * ms * 16 - skip
    assert correlation(out, pcm) >= 0.9


def test_a_bad_opus_packet_is_concealed_not_dropped() -> None:
    pcm = speechlike(16000)
    enc = codecs.encoder("opus", 16000, frame_ms=60)
    packets = enc.encode(pcm)
    good = opus_codec.OpusPacketDecoder(16000)
    want = len(decode_all(good, packets))
    packets[5] = b"\xff"  # a code-3 TOC with no frame count: invalid
    bad = opus_codec.OpusPacketDecoder(16000)
    assert len(decode_all(bad, packets)) == want  # the time is kept
    assert bad.concealed == 1


def test_ogg_opus_decodes_bit_identically_however_cut() -> None:
    pcm = speechlike(16000)
    style = sim_wire.WireStyle(opus_ogg=True, opus_frame_ms=20)
    stream = b"".join(d for d, _ in sim_wire.deltas(pcm, "opus", 16000, style))
    assert stream.startswith(b"OggS")
    dec = codecs.decoder("opus", 16000)
    whole = decode_all(dec, [stream])
    assert dec.kind == "ogg" and correlation(whole, pcm) >= 0.9
    pages = []
    demux = ogg.OggDemuxer()
    assert len(demux.feed(stream)) > 2
    rng = random.Random(7)
    for _ in range(20):
        dec.reset()
        pages = cuts(stream, rng)
        assert decode_all(dec, pages) == whole


def test_pcm_keeps_an_odd_byte_for_the_next_delta() -> None:
    pcm = speechlike(24000, 0.2)
    rng = random.Random(3)
    assert decode_all(codecs.decoder("pcm", 24000), cuts(pcm, rng)) == pcm


def test_sniffing_picks_the_container_from_the_first_delta(
    mp3_stream: tuple[bytes, bytes],
) -> None:
    _, stream = mp3_stream
    assert codecs.sniff(b"OggS\x00\x02", "opus") == "ogg"
    assert codecs.sniff(b"ID3\x04\x00", "opus") == "mp3"
    assert codecs.sniff(stream, "opus") == "mp3"
    assert codecs.sniff(b"RIFF\x24\x00\x00\x00WAVE", "mp3") == "wav"
    assert codecs.sniff(b"\x78\x01\x02", "opus") == "opus"  # a raw packet's TOC
    assert codecs.sniff(b"OggS", "pcm") == "pcm"  # PCM is never second-guessed


def test_a_wav_answer_plays_its_samples() -> None:
    pcm = speechlike(16000, 0.3)
    header = b"RIFF" + (36 + len(pcm)).to_bytes(4, "little") + b"WAVEfmt " + bytes(20)
    stream = header + b"data" + len(pcm).to_bytes(4, "little") + pcm
    assert decode_all(codecs.decoder("opus", 16000), cuts(stream, random.Random(1))) == pcm


# ------------------------------------------------------------------ one decoder per response


def test_a_new_response_gets_a_fresh_decoder(mp3_stream: tuple[bytes, bytes]) -> None:
    """A cancelled response's half-fed frame and bit reservoir never reach the next one."""
    _, stream = mp3_stream
    fresh = Downlink("mp3", 24000).audio("r2", "i2", stream)
    dl = Downlink("mp3", 24000)
    dl.audio("r1", "i1", stream[: len(stream) // 2 + 77])  # cut mid-frame, then abandoned
    assert dl.audio("r2", "i2", stream) == fresh
    dl.audio("r3", "i3", stream[:1000])
    dl.reset()  # cancel / truncate / reconnect
    assert dl.audio("r3", "i3", stream) == fresh


def test_encoder_reset_starts_a_turn_clean() -> None:
    enc = codecs.encoder("opus", 16000, frame_ms=60)
    pcm = speechlike(16000, 0.5)
    first = enc.encode(pcm)
    enc.encode(b"\x01\x00" * 100)
    enc.reset()
    assert enc.encode(pcm) == first


# ------------------------------------------------------------------ missing libraries


def test_a_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes.util

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(mp3, "SONAME", "libmpg123-not-installed.so.0")
    mp3.library.cache_clear()
    monkeypatch.setitem(sys.modules, "opuslib_next", None)
    opus_codec.library.cache_clear()
    try:
        assert "apt install libmpg123-0" in (codecs.missing("mp3") or "")
        assert "opuslib-next" in (codecs.missing("opus") or "")
        assert codecs.missing("pcm") is None and codecs.missing("g711_ulaw") is None
    finally:
        mp3.library.cache_clear()
        opus_codec.library.cache_clear()


def test_the_simulators_mp3_deltas_are_whole_144_byte_frames() -> None:
    pcm = speechlike(24000)
    style = sim_wire.WireStyle(mp3_cuts="frames")
    sizes = [len(d) for d, _ in sim_wire.deltas(pcm, "mp3", 24000, style)]
    assert all(n % 144 == 0 for n in sizes) and sizes[0] == 4 * 144  # 4 × 24 ms a delta


@pytest.mark.parametrize("fmt,rate", [("mp3", 24000), ("opus", 16000), ("g711_alaw", 8000)])
def test_garbage_from_a_server_never_raises(fmt: str, rate: int) -> None:
    """A server (or a proxy) sending random bytes as audio: decoded into something bounded,
    never an exception out of the decoder (which would end the response)."""
    rng = random.Random(fmt)
    dec = codecs.decoder(fmt, rate)
    for n in range(300):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 700)))
        if n % 50 == 0:
            data = b"OggS" + data  # half-pages too
            dec.reset()
        out = dec.feed(data) + dec.flush()
        assert len(out) % 2 == 0 and len(out) <= 2 * rate * 0.12 * max(1, len(data)), len(out)
