"""What leaves the device in wake-word mode while the room talks without the word.

    .venv/bin/python bench/wake_room.py [--minutes 10.5] [--sensitivity S] [--noise-suppression N]

The real daemon (turn.mode wake_word) listens to the PulseAudio room through ALSA; the
simulator sits behind a byte-counting TCP relay on loopback, so every byte on the connection
is seen (WebSocket pings included). The room then plays ``--minutes`` of the corpus's
negative speech (bench/wake_corpus.py: many voices, "okay …" requests, noise, reverb).
Figures: client events and audio bytes sent meanwhile, TCP bytes each way (keepalive only),
wake detections and turns; then "okay nabu, what time is it" as the control that the same
rig does send a turn once the word is said.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DIR = Path(tempfile.mkdtemp(prefix="agentd-wake-room-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call
os.environ["STATE_DIRECTORY"] = str(DIR)

import numpy as np  # noqa: E402

from agentd.config import Loaded, from_mapping  # noqa: E402
from agentd.service import Daemon, Hooks  # noqa: E402
from agentd.sim import Simulator, speech  # noqa: E402
from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc  # noqa: E402


class Relay:
    """A TCP relay that counts the bytes each way (the WebSocket frames, pings included)."""

    def __init__(self, port: int) -> None:
        self.target, self.up, self.down, self.port = port, 0, 0, 0

    async def start(self) -> Relay:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await a.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    b.write(data)
                    await b.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                b.close()

        await asyncio.gather(pipe(r, tw, True), pipe(tr, w, False))


def room_speech(minutes: float) -> tuple[Path, float, list[tuple[float, str]]]:
    """The corpus's negative speech in one WAV of ``minutes``, with what is said when."""
    from wake_corpus import DEFAULT_DIR, build

    clips = [c for c in build(DEFAULT_DIR, 66.0) if c.kind == "negative"]
    parts, total, said = [], 0.0, []
    for c in clips:
        if total >= minutes * 60:
            break
        x = np.fromfile(DEFAULT_DIR / c.file, "<i2")
        parts.append(x)
        said += [(total + t, text) for t, text in c.segments or [(0.0, c.file)]]
        total += len(x) / 16000
    y = np.concatenate(parts)[: int(minutes * 60 * 16000)]
    return speech.write_wav(DIR / "room.wav", y.tobytes(), 16000), len(y) / 16000, said


async def run(minutes: float, wake: dict[str, Any] | None = None) -> dict[str, Any]:
    room = PulseRoom(DIR / "pulse")
    write_asoundrc(DIR, asoundrc(room.socket))
    room.start()
    sim = await Simulator("openai", pace=1.0).start()
    relay = await Relay(sim.port).start()
    cfg = from_mapping(
        {
            "api": {"url": f"ws://127.0.0.1:{relay.port}/v1/realtime"},
            "audio": {
                "input": {"device": "mic", "rate": 48000, "channels": 2},
                "output": {"device": "spk", "rate": 48000},
            },
            "turn": {"mode": "wake_word"},
            "wake": wake or {},
            "button": {"pin": None},
            "led": {"pin": None},
            "control": {"socket": str(DIR / "ctl.sock")},
        }
    )
    states: list[str] = []
    woke: list[float] = []

    def on_state(s: str) -> None:
        states.append(s)
        if s == "listening":
            woke.append(time.monotonic())

    d = Daemon(
        DIR / "none.yaml", Loaded(cfg, None, (), ()), Hooks(use_gpio=False, on_state=on_state)
    )
    task = asyncio.create_task(d.run())
    try:
        while d.conv.state.value != "idle":
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)
        wav, seconds, said = room_speech(minutes)
        events0, up0, down0 = len(sim.events), relay.up, relay.down
        states.clear()
        t0 = time.monotonic()
        await asyncio.to_thread(room.play(wav).wait)
        await asyncio.sleep(1.0)
        wall = time.monotonic() - t0
        sent = sim.events[events0:]
        out: dict[str, Any] = {
            "room_speech_min": seconds / 60,
            "wall_min": wall / 60,
            "client_events": len(sent),
            "client_event_types": sorted({e.event.get("type") for e in sent}),
            "audio_bytes_sent": sum(
                len(e.event.get("audio", "")) * 3 // 4
                for e in sent
                if e.event.get("type") == "input_audio_buffer.append"
            ),
            "tcp_bytes_up": relay.up - up0,
            "tcp_bytes_down": relay.down - down0,
            "wake_detections": d.wake.detections if d.wake else -1,
            "states": sorted(set(states)),
            "woke_during": [
                f"{t - t0:.1f} s: " + max((s for s in said if s[0] <= t - t0), default=(0, "?"))[1]
                for t in woke
            ],
        }
        # control: the word, then a question, in the same room
        said = "okay nabu, what time is it"
        speech.write_wav(DIR / "wake.wav", speech.espeak_pcm(said, 16000), 16000)
        before = len(sim.events)
        await asyncio.to_thread(room.play(DIR / "wake.wav").wait)
        deadline = time.monotonic() + 20
        while d.conv.counters.turns < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        out["control_turns"] = d.conv.counters.turns
        out["control_audio_events"] = sum(
            1 for e in sim.events[before:] if e.event.get("type") == "input_audio_buffer.append"
        )
        return out
    finally:
        d.stop_event.set()
        await asyncio.wait_for(task, 10)
        relay.server.close()
        await sim.stop()
        room.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.5)
    ap.add_argument("--sensitivity", type=float, help="wake.sensitivity (default: shipped)")
    ap.add_argument("--noise-suppression", type=int, help="wake.noise_suppression (shipped)")
    a = ap.parse_args(argv if argv is not None else [])
    wake = {"sensitivity": a.sensitivity, "noise_suppression": a.noise_suppression}
    out = asyncio.run(run(a.minutes, {k: v for k, v in wake.items() if v is not None}))
    print(
        f"{out['room_speech_min']:.1f} min of room speech without the word: "
        f"{out['client_events']} client events, {out['audio_bytes_sent']} audio bytes sent, "
        f"TCP {out['tcp_bytes_up']} B up / {out['tcp_bytes_down']} B down (keepalive), "
        f"{out['wake_detections']} wake detections, states {out['states']}"
    )
    for w in out["woke_during"]:
        print(f"  woke at {w}")
    print(
        f"control 'okay nabu, what time is it': {out['control_turns']} turn(s), "
        f"{out['control_audio_events']} audio events sent"
    )
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
