"""Debug recordings (issue 24, point 5): each turn's uplinked audio and played answer as WAV
files with a JSON sidecar, rotated by count and size, written off the event loop."""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path

import pytest

from agentd import conversation as cv
from agentd.audio.frame import chop
from agentd.config import RecordingSettings
from agentd.recordings import Recorder
from tests import rigs
from tests.harness import Harness

REC_DIR = rigs.RIG_DIR / "recordings"


def wav_ms(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes() * 1000 // w.getframerate()


def turns_in(d: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def wait_for(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "fake_harness", [{"recordings__dir": str(REC_DIR), "recordings__keep_turns": 5}], indirect=True
)
async def test_a_turn_is_recorded_with_its_answer_and_sidecar(fake_harness: Harness) -> None:
    h, sim = fake_harness, fake_harness.sim
    speech = rigs.espeak("what is the weather like today", 16000, Path("unused"))
    frames = chop(speech.astype("<i2").tobytes(), 16000, 20, start=time.monotonic())
    sim.reply = "Sunny and warm."
    h.daemon.feed(cv.Press())
    await h.until(lambda: h.state() == "listening")
    pb = h.daemon.playback
    assert pb is not None
    await h.until(lambda: not pb.busy())  # the listening cue has played (half duplex)
    frames = chop(speech.astype("<i2").tobytes(), 16000, 20, start=time.monotonic())
    for f in frames:
        h.mic(f)
    h.daemon.feed(cv.Release())
    await h.until(lambda: h.state() == "speaking")
    await h.until(lambda: h.state() == "idle")
    wait_for(lambda: len(turns_in(REC_DIR)) == 1)
    (side,) = turns_in(REC_DIR)
    mic, answer = side["mic"], side["answer"]
    assert isinstance(mic, dict) and isinstance(answer, dict)
    spoken_ms = len(speech) * 1000 // 16000
    assert abs(wav_ms(REC_DIR / mic["file"]) - spoken_ms) <= 40, (mic, spoken_ms)
    assert mic["rate"] == 16000
    played_ms = sum(c.end - c.start for c in pb.chunks if c.item) * 1000  # type: ignore[attr-defined]
    assert abs(wav_ms(REC_DIR / answer["file"]) - played_ms) <= 2 and answer["rate"] == 24000
    assert side["transcript"] == {"user": "what is the time", "assistant": "Sunny and warm."}
    assert side["started"] < side["ended"]  # type: ignore[operator]
    # (the writer counts a turn after its files and the rotation: a moment after the sidecar)
    wait_for(lambda: h.daemon.status()["recordings"]["written"] == 1)
    status = h.daemon.status()["recordings"]
    assert status == {"dir": str(REC_DIR), "written": 1, "skipped": 0}


def test_off_by_default_and_no_transcript_unless_enabled(tmp_path: Path) -> None:
    from agentd.config import from_mapping

    assert from_mapping({}).recordings.dir is None
    r = Recorder(RecordingSettings(dir=str(tmp_path)), transcripts=False)
    r.start_turn()
    r.mic(b"\1\0" * 1600, 16000)
    r.transcript("user", "my secret")
    r.close()
    (side,) = turns_in(tmp_path)
    assert "transcript" not in side and "my secret" not in json.dumps(side)


def test_rotation_by_count_and_by_size(tmp_path: Path) -> None:
    r = Recorder(RecordingSettings(dir=str(tmp_path), keep_turns=3), transcripts=False)
    for _ in range(5):
        r.start_turn()
        r.mic(b"\0\0" * 16000, 16000)  # 1 s, 32 kB
        r.answer(b"\0\0" * 24000, 24000)
        r.end_turn()
        wait_for(lambda: r.written + r.skipped == r.count)
    assert [t["turn"] for t in turns_in(tmp_path)] == [3, 4, 5]
    assert len(list(tmp_path.glob("*.wav"))) == 6
    r.close()
    small = tmp_path / "small"
    r = Recorder(RecordingSettings(dir=str(small), keep_turns=100, max_mb=1), transcripts=False)
    for _ in range(4):  # each turn ~ 320 kB
        r.start_turn()
        r.mic(b"\0\0" * 160000, 16000)
        r.end_turn()
        wait_for(lambda: r.written + r.skipped == r.count)
    r.close()
    assert [t["turn"] for t in turns_in(small)] == [2, 3, 4]
    assert sum(p.stat().st_size for p in small.iterdir()) <= 1_000_000


def test_a_slow_disk_never_blocks_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread stuck for a second per turn: handing over a turn still takes
    microseconds, and beyond the queue whole turns are skipped and counted."""
    slow = Recorder._write

    def stuck(self: Recorder, turn: object) -> None:
        time.sleep(1.0)
        slow(self, turn)  # type: ignore[arg-type]

    monkeypatch.setattr(Recorder, "_write", stuck)
    r = Recorder(RecordingSettings(dir=str(tmp_path)), transcripts=False)
    worst = 0.0
    for _ in range(12):
        t0 = time.perf_counter()
        r.start_turn()
        r.mic(b"\0\0" * 3200, 16000)
        r.end_turn()
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.1, worst  # vs 1 s a turn on the stuck disk (slack for a loaded machine)
    assert r.skipped >= 3  # 12 turns, one being written, 8 queued
