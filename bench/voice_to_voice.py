"""Voice to voice in the PulseAudio room: end of the user's speech → first answer sample out of
the room, for push-to-talk and hands-free, with the simulator's think time fixed and subtracted.

The user speaks corpus utterances into the room (paplay); the daemon (in process) hears them
through its microphone, the simulator answers after exactly THINK_S, and the answer plays into
the same room. A probe records the room from outside, so the user's speech and the answer lie
in ONE recording: where the utterance ends and where the answer begins are found there by
content (alignment with the corpus utterance and the answer's own speech), on one clock — no
device latency of the probe enters the difference. What remains after THINK_S is what the
device adds: endpointing (hands-free), the uplink's last frames, the round trip on loopback,
the playout delay and the output's latency. Push-to-talk releases the button when paplay has
played the utterance out (its exit), so that lag is in the figure too.

    .venv/bin/python bench/voice_to_voice.py [turns]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIR = Path(tempfile.mkdtemp(prefix="agentd-v2v-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from agentd import conversation as cv  # noqa: E402
from agentd.audio.frame import AudioFrame  # noqa: E402
from agentd.audio.pcm import to_float, to_int16  # noqa: E402
from agentd.config import load  # noqa: E402
from agentd.service import Daemon, Hooks  # noqa: E402
from agentd.sim import Simulator  # noqa: E402
from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc  # noqa: E402
from agentd.sim.speech import write_wav  # noqa: E402
from tests import corpus  # noqa: E402
from tests.room_oracle import align  # noqa: E402

TURNS = 10
THINK_S = 0.2
REPLY = "Sure, here you go."


def utterances(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    texts = [*corpus.PHRASES[:6], *corpus.PAUSED_PHRASES[:4]]
    return [corpus.paused(t, rng) if "," in t else corpus.utterance(t) for t in texts[:n]] + [
        corpus.utterance(t) for t in corpus.PHRASES[6 : 6 + max(0, n - len(texts))]
    ]


def v2v_ms(rec: np.ndarray, user: np.ndarray, answer: np.ndarray) -> float | None:
    """Utterance end → answer onset in the recording (ms), or None if either is not found."""
    off_u, g_u = align(rec, user)
    if g_u < 0.1:
        return None
    end = off_u + user.size
    if rec.size - end < 16000 // 2:
        return None
    off_a, g_a = align(rec[end:], answer)
    if g_a < 0.1:
        return None
    return off_a * 1000 / 16000


async def one_mode(mode: str, turns: int, room: PulseRoom) -> list[float]:
    async with Simulator("openai", pace=1.0, reply=REPLY) as sim:
        sim.think_s = THINK_S
        sim.speech.pcm(REPLY, 24000)  # synthesized once before timing starts
        cfg_path = DIR / f"{mode}.yaml"
        cfg_path.write_text(
            yaml.safe_dump(
                {
                    "api": {"url": sim.url},
                    "audio": {
                        "input": {"device": "mic", "rate": 48000, "channels": 2},
                        "output": {"device": "spk", "rate": 48000},
                    },
                    "turn": {"mode": mode},
                    "button": {"pin": None},
                    "led": {"pin": None},
                    "sounds": {"enabled": False},
                    "control": {"socket": str(DIR / f"{mode}.sock")},
                    "logging": {"level": "warning"},
                }
            )
        )
        d = Daemon(cfg_path, load(cfg_path, require_key=False), Hooks(use_gpio=False))
        task = asyncio.create_task(d.run())
        while not d.conv.connected:
            await asyncio.sleep(0.01)
        from tests.room_oracle import room_probe

        heard: list[AudioFrame] = []
        probe = room_probe(asyncio.get_running_loop(), heard.append)
        probe.start()
        await asyncio.sleep(1.5)
        answer = to_float(sim.speech.pcm(REPLY, 16000))
        out: list[float] = []
        for i, user in enumerate(utterances(turns + 1)):
            wav = write_wav(DIR / f"u{i}.wav", to_int16(user), 16000)
            heard.clear()
            if mode == "push_to_talk":
                d.feed(cv.Press())
            proc = room.play(wav)
            await asyncio.to_thread(proc.wait)
            if mode == "push_to_talk":
                d.feed(cv.Release())
            t0 = time.monotonic()
            while d.conv.state is not cv.State.SPEAKING:
                await asyncio.sleep(0.005)
                if time.monotonic() - t0 > 8:
                    break
            assert d.playback is not None
            while d.conv.state is cv.State.SPEAKING or d.playback.busy():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # the answer's tail and the probe catch up
            rec = to_float(b"".join(f.audio for f in heard))
            ms = v2v_ms(rec, user, answer)
            if ms is None:
                print(f"turn {i}: not found in the room ({rec.size / 16000:.1f} s recorded)")
            if i and ms is not None:  # the first turn primes the room and the probe
                out.append(ms - THINK_S * 1000)
        probe.stop()
        d.stop_event.set()
        await task
    return out


def main(turns: int = TURNS) -> dict[str, float]:
    room = PulseRoom(DIR / "pulse")
    write_asoundrc(DIR, asoundrc(room.socket))
    room.start()
    out: dict[str, float] = {}
    try:
        for mode, key in (("push_to_talk", "ptt"), ("hands_free", "hf")):
            v = asyncio.run(one_mode(mode, turns, room))
            out[f"{key}_p50_ms"] = float(np.median(v)) if v else float("nan")
            out[f"{key}_p95_ms"] = float(np.percentile(v, 95)) if v else float("nan")
            out[f"{key}_turns"] = float(len(v))
            print(
                f"{mode}: end of user speech → first answer sample in the room, think time "
                f"{THINK_S * 1000:.0f} ms subtracted: p50 {out[f'{key}_p50_ms']:.0f} ms, p95 "
                f"{out[f'{key}_p95_ms']:.0f} ms over {len(v)} turns "
                f"({', '.join(f'{x:.0f}' for x in v)})"
            )
    finally:
        room.stop()
    print("targets: push-to-talk ≤ 60 ms, hands-free ≤ 450 ms (including endpointing)")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else TURNS)
