"""Audio frames know their duration; one framer cuts every PCM stream (issue 20)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webrtcvad

from agentd.audio.frame import AudioFrame, Framer, chop, join
from tests import rigs
from tests.harness import Harness
from tests.room_oracle import room_probe


def test_a_frame_computes_its_own_duration() -> None:
    f = AudioFrame(bytes(48000 * 2 * 2 // 50), 48000, channels=2, timestamp=5.0)  # 20 ms stereo
    assert (f.samples, f.milliseconds) == (960, 20)
    assert f.seconds == pytest.approx(0.02) and f.end == pytest.approx(5.02)
    assert AudioFrame(bytes(160 * 2), 16000).milliseconds == 10


def test_a_bad_frame_is_named() -> None:
    with pytest.raises(ValueError, match="not whole samples of 2 bytes × 2 channels"):
        AudioFrame(bytes(6), 16000, channels=2)
    with pytest.raises(ValueError, match="positive rate"):
        AudioFrame(b"", 0)
    with pytest.raises(ValueError, match="cannot join a 24000 Hz"):
        join([AudioFrame(bytes(4), 16000), AudioFrame(bytes(4), 24000)])


def test_float_converters_round_trip() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.5, -1.5], np.float32)
    f = AudioFrame.from_floats(x, 16000, timestamp=1.0)
    full = np.iinfo(np.int16)
    assert f.array().tolist() == [0, 16384, -16384, full.max, full.min]  # clipped at full scale
    assert f.floats()[:3].tolist() == x[:3].tolist()  # one scale: exact both ways


@pytest.mark.parametrize("ms", [10, 20, 30])
def test_framer_recuts_any_chunks_into_exact_frames_with_stream_timestamps(ms: int) -> None:
    pcm = np.arange(16000, dtype="<i2").tobytes()  # 1 s, every sample distinct
    framer = Framer(16000, ms, start=2.0)
    frames = []
    for i in range(0, len(pcm), 2 * 333):  # odd-sized chunks, as a resampler hands them
        frames += framer.push(pcm[i : i + 2 * 333])
    assert all(f.milliseconds == ms for f in frames)
    assert b"".join(f.audio for f in frames) == pcm[: len(frames) * 32 * ms]
    assert [f.timestamp for f in frames] == pytest.approx(
        [2.0 + i * ms / 1000 for i in range(len(frames))]
    )
    rest = framer.flush()
    assert (rest is None) == (16000 % (16 * ms) == 0)


def test_framer_anchors_timestamps_to_when_the_audio_was_read() -> None:
    """A capture thread says when the last sample of a read arrived: frames count back from
    there, so a lost stretch (overrun) does not shift later frames."""
    framer = Framer(16000, 20)
    first = framer.push(bytes(2 * 480), end=10.0)  # 30 ms: one frame, 10 ms kept
    assert [f.timestamp for f in first] == pytest.approx([9.97])
    later = framer.push(bytes(2 * 310), end=11.0)  # 10 + 19.375 ms: one frame ending 0.375 ms ago
    assert [f.end for f in later] == pytest.approx([11.0 - 9.375 / 1000])


def test_chop_keeps_the_tail_only_when_asked() -> None:
    pcm = bytes(2 * 2400 * 2 + 2 * 100)  # 200 ms + 100 samples at 24 kHz
    assert [f.milliseconds for f in chop(pcm, 24000, 100)] == [100, 100]
    tail = chop(pcm, 24000, 100, start=1.0, tail=True)
    assert [f.samples for f in tail] == [2400, 2400, 100]
    assert tail[-1].timestamp == pytest.approx(1.2)


# ---------------------------------------------------------------- through the daemon, in a room


def _hands_free(period_ms: int) -> dict[str, Any]:
    return {
        "turn__mode": "hands_free",
        "audio__input": {"device": "mic", "rate": 48000, "channels": 2, "period_ms": period_ms},
        "sounds__enabled": False,
    }


@pytest.mark.parametrize(
    "harness", [_hands_free(10), _hands_free(20), _hands_free(30)], indirect=True
)
async def test_hands_free_endpoint_is_the_hangover_at_every_period(
    harness: Harness, room: rigs.PulseRoom, tmp_path: Path
) -> None:
    """Speech played into the room reaches the daemon through real Capture at the configured
    period: the turn ends the hangover (``vad.hangover_ms``, rounded up to whole frames) after the
    speech's last voiced frame in the room (as a probe on the room's monitor timestamps it),
    plus the loop's own delay, at 10, 20 and 30 ms alike (with FRAME_MS = 20 the hangover was
    250 ms at 10 ms and 750 ms at 30 ms)."""
    h = harness
    period = h.daemon.cfg.audio.input.period_ms
    speech = rigs.espeak("set a timer for ten minutes", 16000, tmp_path / "u")
    heard: list[AudioFrame] = []  # the room from outside, timestamped like the daemon's mic
    probe = room_probe(asyncio.get_running_loop(), heard.append)
    probe.start()
    try:
        await h.until(lambda: h.daemon.conv.connected)
        await asyncio.sleep(1.0)  # the room's monitor first delivers junk
        proc = room.play(rigs.write_wav(tmp_path / "u.wav", speech, 16000))
        await h.until(lambda: h.state() == "listening")
        await asyncio.to_thread(proc.wait, 20)
        await h.until(lambda: h.state() != "listening")
        ended = next(t for t, s in reversed(h.states) if s != "listening")
    finally:
        await probe.aclose()
    # the end of speech as the daemon's VAD sees it: the last voiced frame of the room's sound
    # The answer plays into the same room: a probe still listening hears its first syllable,
    # which is no part of the user's speech (taken for it, the turn "ended 91 ms before the
    # last voiced frame", the daemon's own last voiced frame 421 ms before that syllable, once
    # answers started sooner). The probe's clock is the daemon's: nothing the daemon plays is
    # in the room before it entered "speaking".
    answer_from = min((t for t, s in h.states if s == "speaking"), default=float("inf"))
    vad = webrtcvad.Vad(h.daemon.cfg.vad.aggressiveness)
    room_frames = chop(join(heard).audio, 16000, period, start=heard[0].timestamp)
    spoken_end = max(
        f.end for f in room_frames if f.end <= answer_from and vad.is_speech(f.audio, 16000)
    )
    delay_ms = (ended - spoken_end) * 1000
    hangover = h.daemon.gate.hangover_ms  # vad.hangover_ms, or longer as the adaptive one learned
    print(f"period {period} ms: turn ended {delay_ms:.0f} ms after the last voiced frame")
    assert hangover <= delay_ms <= hangover + period + 150, (delay_ms, hangover)
