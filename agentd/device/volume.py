"""The speaker volume, 0..100: the output card's ALSA mixer control, or a software gain where
the card has none (`audio.output.mixer`).

The mixer is looked up on the card the output PCM names (``plughw:CARD=<id>,DEV=0`` →
``hw:CARD=<id>``), else on the ALSA control of the same name as the PCM (``default``, or a
``ctl.<name>`` the ALSA configuration defines). ``auto`` takes the first of
:data:`PREFERRED` the card has, else any control with a playback volume. The level the owner
sets is kept in the state directory and put back after a restart.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from agentd.config import OutputSettings

log = logging.getLogger("agentd.volume")

STEP = 10  # `ctl volume up|down`
#: mixer controls `auto` tries first, in this order (WM8960: Playback is the DAC's digital
#: volume, for speaker and headphones alike)
PREFERRED = ("Master", "Speaker", "Playback", "PCM", "Headphone", "Digital")
CARD = re.compile(r"CARD=([^,]+)")


def control_device(pcm: str) -> str:
    """The ALSA control device of a playback PCM name."""
    m = CARD.search(pcm)
    if m:
        return f"hw:CARD={m.group(1)}"
    return pcm.split(":", 1)[0]


def card_missing(device: str) -> str | None:
    """``hw:CARD=<id>`` whose card is not plugged in (asked without ALSA printing errors), or
    None."""
    import alsaaudio

    m = CARD.search(device)
    if m is None:
        return None
    try:
        present = m.group(1) in alsaaudio.cards()
    except alsaaudio.ALSAAudioError:
        present = False
    return None if present else f"sound card {m.group(1)} is not present"


def parse_level(arg: str, current: int) -> int:
    """`ctl volume` argument: N (0..100), +N/-N, up, down → the new level; ValueError says
    what is accepted."""
    text = arg.strip().lower()
    if text in ("up", "down"):
        return max(0, min(100, current + (STEP if text == "up" else -STEP)))
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"volume must be 0..100, up or down (got {arg[:20]!r})") from None
    if text[0] in "+-":
        n += current
    elif not 0 <= n <= 100:
        raise ValueError(f"volume must be 0..100 (got {n})")
    return max(0, min(100, n))


def find_control(device: str, wanted: str) -> str:
    """The mixer control to use on ``device``; ValueError says why there is none."""
    import alsaaudio

    missing = card_missing(device)
    if missing:
        raise ValueError(missing)
    try:
        names = alsaaudio.mixers(device=device)
    except alsaaudio.ALSAAudioError as exc:
        raise ValueError(f"no mixer on {device} ({exc})") from None
    if wanted != "auto":
        if wanted not in names:
            raise ValueError(
                f"no mixer control {wanted!r} on {device} (it has: {', '.join(names) or 'none'})"
            )
        return wanted
    for name in (*[n for n in PREFERRED if n in names], *names):
        try:
            caps = alsaaudio.Mixer(name, device=device).volumecap()
        except alsaaudio.ALSAAudioError:
            continue
        if any("Playback" in c or c == "Volume" for c in caps):
            return name
    raise ValueError(f"no playback volume control on {device} (it has: {', '.join(names)})")


class Volume:
    """One volume for the daemon; :meth:`set` is the one setter (ctl volume, tools)."""

    def __init__(self, settings: OutputSettings, saved: int | None = None) -> None:
        self.settings = settings
        self.device = control_device(settings.device)
        self.control: str | None = None  # the mixer control in use; None = software gain
        self.problem: str | None = None  # why there is no mixer although one was asked for
        self._mixer: Any = None
        self.level = 100 if saved is None else saved
        if settings.mixer is not None:
            self._open(settings.mixer)
        if self._mixer is not None:
            if saved is None:
                self.level = self._read()
            else:
                self._write(saved)

    def _open(self, wanted: str) -> None:
        import alsaaudio

        try:
            self.control = find_control(self.device, wanted)
            self._mixer = alsaaudio.Mixer(self.control, device=self.device)
        except (ValueError, alsaaudio.ALSAAudioError) as exc:
            self.control, self._mixer = None, None
            self.problem = str(exc)
            level = logging.INFO if wanted == "auto" else logging.WARNING
            log.log(level, "volume: %s; using a software gain instead", exc)

    def _read(self) -> int:
        levels = self._mixer.getvolume()
        return round(sum(levels) / len(levels)) if levels else self.level

    def _write(self, level: int) -> None:
        import alsaaudio

        try:
            self._mixer.setvolume(level)
        except alsaaudio.ALSAAudioError as exc:  # the card went away: keep the level
            log.warning("volume: cannot set %s on %s: %s", self.control, self.device, exc)

    @property
    def gain(self) -> float:
        """The software gain factor (1.0 while a mixer does the job)."""
        return 1.0 if self._mixer is not None else self.level / 100

    def set(self, level: int) -> int:
        self.level = max(0, min(100, int(level)))
        if self._mixer is not None:
            self._write(self.level)
        return self.level

    def describe(self) -> str:
        if self._mixer is not None:
            return f"mixer {self.control} on {self.device}"
        return "software gain" + (f" ({self.problem})" if self.problem else "")

    def close(self) -> None:
        if self._mixer is not None:
            self._mixer.close()
            self._mixer = None


def check_mixer(settings: OutputSettings) -> str | None:
    """check-config: a mixer control named in the config that the (present) card lacks.
    Nothing to say for auto or null, or while the card is not plugged in."""
    if settings.mixer in (None, "auto"):
        return None
    import alsaaudio

    device = control_device(settings.device)
    if card_missing(device):
        return None  # the card is not here (yet): the daemon says so when it starts
    try:
        alsaaudio.mixers(device=device)
    except alsaaudio.ALSAAudioError:
        return None
    try:
        find_control(device, settings.mixer)
    except ValueError as exc:
        return f"audio.output.mixer: {exc}; use auto, one of those names, or null (software gain)"
    return None
