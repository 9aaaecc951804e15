"""Debug recordings (`recordings.dir`, off by default): what the device heard and played.

Each turn becomes ``<time>-<n>-mic.wav`` (the audio sent to the server, as the microphone
delivered it after the voice gate), ``<time>-<n>-answer.wav`` (the answer as played) and
``<time>-<n>.json`` (times, lengths, and the transcripts only when logging.transcripts is on).
The event loop only appends bytes to lists; a worker thread writes the files and deletes the
oldest turns beyond ``keep_turns`` / ``max_mb``. When the writer falls behind, whole turns are
skipped and counted rather than the loop waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentd.config import RecordingSettings

log = logging.getLogger("agentd.recordings")

MAX_STREAM_S = 600.0  # audio kept per stream of one turn
QUEUE_TURNS = 8  # finished turns waiting for the writer
STEM_LEN = len("20260101T000000-00001")  # a turn's files share this prefix


@dataclass
class _Stream:
    rate: int = 0
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, pcm: bytes, rate: int) -> None:
        if self.rate and rate != self.rate:  # one rate per file: a change starts no new file
            return
        self.rate = rate
        if self.size + len(pcm) <= MAX_STREAM_S * rate * 2:
            self.chunks.append(pcm)
            self.size += len(pcm)

    def ms(self) -> int:
        return self.size * 1000 // (2 * self.rate) if self.rate else 0


@dataclass
class _Turn:
    number: int
    started: float  # wall clock
    ended: float = 0.0
    mic: _Stream = field(default_factory=_Stream)
    answer: _Stream = field(default_factory=_Stream)
    transcript: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Collects one turn at a time on the loop; :meth:`end_turn` hands it to the writer."""

    def __init__(self, settings: RecordingSettings, transcripts: bool) -> None:
        assert settings.dir is not None
        self.dir = Path(settings.dir)
        self.keep_turns = settings.keep_turns
        self.max_bytes = int(settings.max_mb * 1_000_000)
        self.transcripts = transcripts
        self.turn: _Turn | None = None
        self.count = 0
        self.written = 0
        self.skipped = 0  # turns not written: the writer was behind, or the disk refused
        self._queue: queue.Queue[_Turn | None] = queue.Queue(QUEUE_TURNS)
        self._thread = threading.Thread(target=self._writer, name="agentd-recordings", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- loop side (cheap)

    def start_turn(self) -> None:
        self.end_turn()
        self.count += 1
        self.turn = _Turn(self.count, time.time())

    def mic(self, pcm: bytes, rate: int) -> None:
        if self.turn is not None:
            self.turn.mic.add(pcm, rate)

    def answer(self, pcm: bytes, rate: int) -> None:
        if self.turn is not None:
            self.turn.answer.add(pcm, rate)

    def transcript(self, role: str, text: str) -> None:
        if self.turn is not None and self.transcripts and text:
            so_far = self.turn.transcript.get(role)
            self.turn.transcript[role] = f"{so_far} {text}" if so_far else text

    def end_turn(self) -> None:
        turn, self.turn = self.turn, None
        if turn is None or not (turn.mic.size or turn.answer.size):
            return
        turn.ended = time.time()
        try:
            self._queue.put_nowait(turn)
        except queue.Full:
            self.skipped += 1
            log.warning("recordings: the writer is behind; turn %d not recorded", turn.number)

    def close(self, timeout: float = 2.0) -> None:
        self.end_turn()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    # -------------------------------------------------------------- writer thread

    def _writer(self) -> None:
        while (turn := self._queue.get()) is not None:
            try:
                self._write(turn)
                self._rotate()
                self.written += 1
            except OSError as exc:
                self.skipped += 1
                log.warning("recordings: cannot write to %s: %s", self.dir, exc)

    def _write(self, turn: _Turn) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(turn.started, UTC).strftime("%Y%m%dT%H%M%S")
        stem = f"{stamp}-{turn.number:05d}"
        side: dict[str, Any] = {
            "turn": turn.number,
            "started": _iso(turn.started),
            "ended": _iso(turn.ended),
        }
        for name, stream in (("mic", turn.mic), ("answer", turn.answer)):
            if stream.size:
                path = self.dir / f"{stem}-{name}.wav"
                with wave.open(str(path), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(stream.rate)
                    for chunk in stream.chunks:
                        w.writeframes(chunk)
                side[name] = {"file": path.name, "rate": stream.rate, "ms": stream.ms()}
        if turn.transcript:
            side["transcript"] = turn.transcript
        (self.dir / f"{stem}.json").write_text(json.dumps(side, ensure_ascii=False, indent=1))

    def _rotate(self) -> None:
        """Delete the oldest turns beyond keep_turns, then beyond max_mb."""
        turns: dict[str, list[Path]] = {}
        for p in self.dir.iterdir():
            if p.suffix in (".wav", ".json") and p.is_file():
                turns.setdefault(p.name[:STEM_LEN], []).append(p)
        order = sorted(turns)
        sizes = {k: sum(p.stat().st_size for p in v) for k, v in turns.items()}
        total = sum(sizes.values())
        while order and (len(order) > self.keep_turns or total > self.max_bytes):
            oldest = order.pop(0)
            for p in turns[oldest]:
                p.unlink(missing_ok=True)
            total -= sizes[oldest]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
