"""The pure uplink: rate conversion and the audio held for an outage (issue 20)."""

from __future__ import annotations

import numpy as np

from agentd.audio.frame import AudioFrame
from agentd.uplink import Uplink


def tone(ms: int, rate: int = 16000, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def test_converts_to_the_api_rate_continuously() -> None:
    up = Uplink(24000, 30.0)
    second = tone(1000)
    out = b"".join(
        up.convert(AudioFrame(second[i : i + 640], 16000)) for i in range(0, len(second), 640)
    )
    samples = len(out) // 2
    assert 24000 - 960 <= samples <= 24000  # 1 s at 24 kHz, less the resampler's delay
    x = np.frombuffer(out, dtype="<i2").astype(np.float32)
    spectrum = np.abs(np.fft.rfft(x[4800:]))
    peak_hz = np.argmax(spectrum) * 24000 / len(x[4800:])
    assert abs(peak_hz - 440) < 5  # the same tone, not a pitch-shifted one


def test_a_committed_turn_sends_the_resamplers_tail_too() -> None:
    """finish() hands on the audio the resampler held back for its look-ahead: the server
    gets the whole turn (the last ~20-37 ms used to be dropped by the next turn's reset)."""
    up = Uplink(24000, 30.0)
    second = tone(1000)
    out = b"".join(
        b"".join(up.encode(up.convert(AudioFrame(second[i : i + 640], 16000))))
        for i in range(0, len(second), 640)
    )
    assert len(out) // 2 < 24000 - 240  # held back before the commit
    out += b"".join(up.finish())
    assert abs(len(out) // 2 - 24000) <= 2  # the whole second


def test_equal_rates_pass_through() -> None:
    up = Uplink(16000, 30.0)
    pcm = tone(20)
    assert up.convert(AudioFrame(pcm, 16000)) == pcm


def test_held_audio_is_replayed_whole_in_order_then_gone() -> None:
    up = Uplink(24000, 30.0)
    chunks = [bytes([i]) * 960 for i in range(5)]  # 5 × 20 ms at 24 kHz
    for c in chunks:
        up.hold(c)
    assert up.held_ms == 100
    assert up.take() == chunks
    assert up.held_ms == 0 and up.take() == []


def test_held_audio_is_bounded_to_one_turn_oldest_first() -> None:
    up = Uplink(24000, 0.1)  # a 100 ms turn at most
    chunks = [bytes([i]) * 960 for i in range(8)]
    for c in chunks:
        up.hold(c)
    assert up.take() == chunks[-5:]


def test_new_turn_drops_what_the_last_one_held() -> None:
    up = Uplink(24000, 30.0)
    up.hold(b"\x01\x00" * 480)
    up.new_turn()
    assert up.held_ms == 0


def test_reconfigure_changes_rate_and_bound() -> None:
    up = Uplink(24000, 30.0)
    up.configure(16000, 0.04)
    assert up.rate == 16000 and up.convert(AudioFrame(tone(20), 16000)) == tone(20)
    for _ in range(3):
        up.hold(b"\x00\x00" * 320)
    assert up.held_ms == 40


def test_a_frame_at_another_rate_gets_its_own_resampler() -> None:
    up = Uplink(24000, 30.0)
    out = up.convert(AudioFrame(tone(200, rate=8000), 8000))  # 200 ms at 8 kHz
    assert 24000 * 0.2 - 960 <= len(out) // 2 <= 24000 * 0.2  # 200 ms at 24 kHz, not 600 ms
