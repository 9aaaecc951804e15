"""What the daemon does for the hardware people own (issue 24), kept out of the hub: the
speaker volume, the event stream for other programs, debug recordings and the cue sounds.

The daemon calls in at a few seams (a turn starts, the state changes, audio goes up or is
played, a transcript is done, a reload) and reads :meth:`Hat.status` into `ctl status`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentd import conversation as cv
from agentd.config import Config, CueFiles, OutputSettings
from agentd.device.cues import CueSounds
from agentd.device.volume import Volume, parse_level
from agentd.events_feed import EventsFeed
from agentd.recordings import Recorder
from agentd.state import Persisted

log = logging.getLogger("agentd")


class Hat:
    def __init__(self, cfg: Config, persisted: Persisted) -> None:
        self.persisted = persisted
        self.events = EventsFeed()
        self.volume: Volume | None = None  # opened with the speaker
        self.recorder = _recorder(cfg)
        self.cues = _cues(cfg, CueSounds(CueFiles(), cfg.sounds.volume))
        self.transcripts = cfg.logging.transcripts
        self._in_turn = False
        self._error_seen: str | None = None
        self._muted = False

    def status(self) -> dict[str, Any]:
        vol, rec = self.volume, self.recorder
        return {
            "volume": vol.level if vol else None,
            "volume_control": vol.describe() if vol else None,
            "recordings": (
                {"dir": str(rec.dir), "written": rec.written, "skipped": rec.skipped}
                if rec
                else None
            ),
            "event_subscribers": self.events.subscribers,
            "event_subscribers_dropped": self.events.dropped,
        }

    # -------------------------------------------------------------- volume

    def open_volume(self, output: OutputSettings) -> None:
        """With the speaker (again): its mixer, set to the level kept from before."""
        if self.volume is not None:
            self.volume.close()
        self.volume = Volume(output, self.persisted.volume())

    def set_volume(self, level: int) -> int:
        if self.volume is None:
            raise RuntimeError("no speaker is open")
        level = self.volume.set(level)
        self.persisted.set_volume(level)
        self.events.publish("volume", volume=level)
        log.info("volume %d%% (%s)", level, self.volume.describe())
        return level

    def volume_command(self, value: str | None) -> dict[str, Any]:
        """`ctl volume [N|up|down]`."""
        if self.volume is None:
            return {"ok": False, "error": "no speaker is open"}
        if value is not None:
            try:
                self.set_volume(parse_level(value, self.volume.level))
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
        return {"ok": True, "volume": self.volume.level, "control": self.volume.describe()}

    def gain(self, gain: float) -> float:
        """A sound's gain with the software volume applied (unchanged while a mixer works)."""
        return gain * (self.volume.gain if self.volume is not None else 1.0)

    # -------------------------------------------------------------- what happens

    def turn_started(self, turn: int) -> None:
        if self.recorder is not None:
            self.recorder.start_turn()
        self._in_turn = True
        self.events.publish("turn_start", turn=turn)

    def changed(self, conv: cv.Conversation, state_changed: bool) -> None:
        """After each input: a new error, a new state, mute, and the end of a turn (back at
        rest), for subscribers and the recorder."""
        if conv.last_error != self._error_seen:
            self._error_seen = conv.last_error
            if conv.last_error:
                self.events.publish("error", error=conv.last_error)
        if not state_changed:
            return
        state = conv.state
        self.events.publish("state", state=state.value)
        muted = state is cv.State.MUTED
        if muted != self._muted:
            self._muted = muted
            self.events.publish("mute", muted=muted, switch=conv.switch_muted)
        if self._in_turn and state.value not in cv.BUSY:
            self._in_turn = False
            if self.recorder is not None:
                self.recorder.end_turn()
            self.events.publish("turn_end", turn=conv.counters.turns)

    def transcript(self, role: str, text: str) -> None:
        if self.transcripts:
            self.events.publish("transcript", role=role, text=text)
        if self.recorder is not None:
            self.recorder.transcript(role, text)

    # -------------------------------------------------------------- reload, stop

    async def reload(self, old: Config, new: Config) -> None:
        self.transcripts = new.logging.transcripts
        if old.sounds != new.sounds:
            self.cues = _cues(new, self.cues)
        if (old.recordings, old.logging.transcripts) != (new.recordings, new.logging.transcripts):
            if self.recorder is not None:
                await asyncio.to_thread(self.recorder.close)
            self.recorder = _recorder(new)

    async def close(self) -> None:
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        if self.volume is not None:
            self.volume.close()


def _cues(cfg: Config, old: CueSounds) -> CueSounds:
    """The configured cue files; one that went bad since check-config keeps ``old``."""
    try:
        return CueSounds(cfg.sounds.files, cfg.sounds.volume)
    except ValueError as exc:
        log.error("sounds.files: %s; keeping the cues as they were", exc)
        return old


def _recorder(cfg: Config) -> Recorder | None:
    if cfg.recordings.dir is None:
        return None
    return Recorder(cfg.recordings, cfg.logging.transcripts)
