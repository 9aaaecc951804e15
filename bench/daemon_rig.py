"""What the benches that run the real daemon share (one way to do each): its config file, the
PulseAudio room with a probe recording it from outside, `agentd run` started up to READY=1,
and finding an answer's onset in the room's recording by content.

A bench sets ``XDG_CONFIG_HOME`` (its asoundrc) before its first ALSA call, then uses these.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agentd.audio.alsa import Playback
from agentd.audio.frame import AudioFrame
from agentd.audio.pcm import to_float
from agentd.config import load
from agentd.service import Daemon, Hooks
from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc
from tests.room_oracle import align, room_probe


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def daemon_config(
    path: Path, url: str, control: Path, mic: str = "mic", spk: str = "spk", **sections: Any
) -> Path:
    """The daemon's YAML at ``path``: a card-like 48 kHz stereo ``mic`` and a 48 kHz ``spk``,
    no GPIO, no sounds, warnings only; ``sections`` (e.g. ``turn={"mode": ...}``) merged in."""
    data: dict[str, Any] = {
        "api": {"url": url},
        "audio": {
            "input": {"device": mic, "rate": 48000, "channels": 2},
            "output": {"device": spk, "rate": 48000},
        },
        "button": {"pin": None},
        "led": {"pin": None},
        "sounds": {"enabled": False},
        "control": {"socket": str(control)},
        "logging": {"level": "warning"},
    }
    path.write_text(yaml.safe_dump(_merge(data, sections)))
    return path


@contextmanager
def pulse_room(rig_dir: Path) -> Iterator[PulseRoom]:
    """The PulseAudio room, its PCMs (`mic`, `spk`) in ``rig_dir``'s asoundrc."""
    room = PulseRoom(rig_dir / "pulse")
    write_asoundrc(rig_dir, asoundrc(room.socket))
    room.start()
    try:
        yield room
    finally:
        room.stop()


class InRoom:
    """The daemon running in this process in the room, and the room recorded from outside:
    ``heard`` collects the probe's 16 kHz frames (clear it per turn)."""

    def __init__(self, cfg_path: Path, hooks: Hooks | None = None) -> None:
        self.daemon = Daemon(
            cfg_path, load(cfg_path, require_key=False), hooks or Hooks(use_gpio=False)
        )
        self.heard: list[AudioFrame] = []
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> InRoom:
        self._task = asyncio.create_task(self.daemon.run())
        while not self.daemon.conv.connected:
            await asyncio.sleep(0.01)
        self.probe = room_probe(asyncio.get_running_loop(), self.heard.append)
        self.probe.start()
        await asyncio.sleep(1.5)  # the probe's first second arrives late
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.probe.stop()
        self.daemon.stop_event.set()
        assert self._task is not None
        await self._task


def first_arrivals() -> tuple[type[Playback], dict[str, float]]:
    """A Playback that notes when each answer's first audio was handed to it (observes only)."""
    firsts: dict[str, float] = {}

    class Timed(Playback):
        def play(self, pcm: bytes, item: str | None = None, **kw: Any) -> None:
            if item is not None and pcm and item not in firsts:
                firsts[item] = time.monotonic()
            super().play(pcm, item, **kw)

    return Timed, firsts


def onset_in_room(frames: list[AudioFrame], ref: np.ndarray) -> float | None:
    """When ``ref`` began in the room: its content aligned in the probe's recording, turned into
    the probe's clock by the frame it falls in (frames are timestamped at capture, their start)."""
    if not frames:
        return None
    rec = to_float(b"".join(f.audio for f in frames))
    off, gain = align(rec, ref)
    if gain < 0.1:
        return None
    i = min(len(frames) - 1, off // frames[0].samples)
    return frames[i].timestamp + (off - i * frames[0].samples) / 16000


@contextmanager
def agentd_run(
    cfg: Path,
    notify: Path,
    timeout_s: float = 15,
    launch: Sequence[str] = ("-m", "agentd"),
    env: dict[str, str] | None = None,
) -> Iterator[tuple[int, float]]:
    """`agentd run` in its own process, up to READY=1: yields (pid, seconds to READY=1).
    ``launch``: what the interpreter is given before ``run --config``, e.g. ``("-c", code)``
    for code that observes the daemon and then runs agentd's ``__main__``; ``env``: more of
    its environment."""
    notify.unlink(missing_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(notify))
    s.settimeout(timeout_s)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "OPENAI_API_KEY": "", **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *launch, "run", "--config", str(cfg)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        while b"READY=1" not in s.recv(4096):
            pass
        yield proc.pid, time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(5)
        s.close()
