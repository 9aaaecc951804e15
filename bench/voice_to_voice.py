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

For hands-free, each turn's time is also split (Parts): endpointing, handing the endpoint to
the loop, the server side (think time subtracted) and playout to the room.

    .venv/bin/python bench/voice_to_voice.py [turns] [ptt|hf]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIR = Path(tempfile.mkdtemp(prefix="agentd-v2v-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call

import numpy as np  # noqa: E402

from agentd import conversation as cv  # noqa: E402
from agentd.audio.frame import AudioFrame  # noqa: E402
from agentd.audio.pcm import to_float, to_int16  # noqa: E402
from agentd.service import Hooks  # noqa: E402
from agentd.sim import Simulator  # noqa: E402
from agentd.sim.room import PulseRoom  # noqa: E402
from agentd.sim.speech import write_wav  # noqa: E402
from agentd.voice import gate as vg  # noqa: E402
from bench.daemon_rig import InRoom, daemon_config, first_arrivals, pulse_room  # noqa: E402
from tests import corpus  # noqa: E402
from tests.room_oracle import align  # noqa: E402

TURNS = 20
THINK_S = 0.2
REPLY = "Sure, here you go."


def utterances(n: int) -> list[np.ndarray]:
    """The corpus in a fixed order (plain phrases with a 300 ms pause inside, and phrases with
    natural pauses), cycled: every turn count gets the same first turns."""
    rng = np.random.default_rng(5)
    texts = [
        *corpus.PHRASES[:6],
        *corpus.PAUSED_PHRASES[:4],
        *corpus.PHRASES[6:],
        *corpus.PAUSED_PHRASES[4:],
    ]
    return [
        corpus.paused(t, rng) if "," in t else corpus.utterance(t)
        for t in itertools.islice(itertools.cycle(texts), n)
    ]


@dataclass
class Parts:
    """Where a hands-free turn's time went (ms): utterance end → local endpoint (the gate's
    SpeechEnded, on the microphone's capture clock); → the loop handled it; commit received
    by the simulator → first answer audio handed to playback, think time subtracted; → the
    answer's onset in the room (playout delay and the output's latency, and the probe's)."""

    endpoint: float
    handled: float
    server: float
    playout: float
    chosen: float  # the playout delay the answer started with (part of ``playout``)


def v2v_ms(rec: np.ndarray, user: np.ndarray, answer: np.ndarray) -> tuple[float, int] | None:
    """Utterance end → answer onset in the recording (ms) and where the utterance ends
    (sample), or None if either is not found."""
    off_u, g_u = align(rec, user)
    if g_u < 0.1:
        return None
    end = off_u + user.size
    if rec.size - end < 16000 // 2:
        return None
    off_a, g_a = align(rec[end:], answer)
    if g_a < 0.1:
        return None
    return off_a * 1000 / 16000, end


def probe_time(frames: list[AudioFrame], sample: int) -> float:
    """The probe's clock at ``sample`` of its recording (frames are timestamped at capture)."""
    i = min(len(frames) - 1, sample // frames[0].samples)
    return frames[i].timestamp + (sample - i * frames[0].samples) / 16000


async def one_mode(mode: str, turns: int, room: PulseRoom) -> tuple[list[float], list[Parts]]:
    async with Simulator("openai", pace=1.0, reply=REPLY) as sim:
        sim.think_s = THINK_S
        sim.speech.pcm(REPLY, 24000)  # synthesized once before timing starts
        cfg = daemon_config(
            DIR / f"{mode}.yaml", sim.url, DIR / f"{mode}.sock", turn={"mode": mode}
        )
        timed, firsts = first_arrivals()
        async with InRoom(cfg, Hooks(use_gpio=False, make_playback=timed)) as rig:
            d, heard = rig.daemon, rig.heard
            ends: list[tuple[float, float]] = []  # (SpeechEnded.t, when the loop handled it)
            gate_events = d._gate_events

            def spy(events: list[vg.VoiceEvent]) -> None:
                ends.extend(
                    (e.t, time.monotonic()) for e in events if isinstance(e, vg.SpeechEnded)
                )
                gate_events(events)

            d._gate_events = spy  # type: ignore[method-assign]
            answer = to_float(sim.speech.pcm(REPLY, 16000))
            out: list[float] = []
            parts: list[Parts] = []
            for i, user in enumerate(utterances(turns + 1)):
                wav = write_wav(DIR / f"u{i}.wav", to_int16(user), 16000)
                heard.clear()
                ends.clear()
                sim.events.clear()
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
                item = d.conv.item_id
                assert d.playback is not None
                while d.conv.state is cv.State.SPEAKING or d.playback.busy():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # the answer's tail and the probe catch up
                frames = list(heard)
                rec = to_float(b"".join(f.audio for f in frames))
                found = v2v_ms(rec, user, answer)
                if found is None:
                    print(f"turn {i}: not found in the room ({rec.size / 16000:.1f} s recorded)")
                    continue
                ms, end = found
                if not i:  # the first turn primes the room and the probe
                    continue
                out.append(ms - THINK_S * 1000)
                commits = sim.client_events("input_audio_buffer.commit")
                commit_t = next(
                    (r.t for r in sim.events if r.event["type"] == "input_audio_buffer.commit"),
                    None,
                )
                if commits and commit_t is not None and item in firsts:
                    user_end = probe_time(frames, end)
                    onset = user_end + ms / 1000
                    endpoint = (ends[-1][0] - user_end) * 1000 if ends else float("nan")
                    handled = (ends[-1][1] - ends[-1][0]) * 1000 if ends else float("nan")
                    parts.append(
                        Parts(
                            endpoint,
                            handled,
                            (firsts[item] - commit_t) * 1000 - THINK_S * 1000,
                            (onset - firsts[item]) * 1000,
                            d.playback.playout.stats.chosen_ms,
                        )
                    )
    return out, parts


def main(turns: int = TURNS, only: str | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    with pulse_room(DIR) as room:
        for mode, key in (("push_to_talk", "ptt"), ("hands_free", "hf")):
            if only and only != key:
                continue
            v, parts = asyncio.run(one_mode(mode, turns, room))
            out[f"{key}_p50_ms"] = float(np.median(v)) if v else float("nan")
            out[f"{key}_p95_ms"] = float(np.percentile(v, 95)) if v else float("nan")
            out[f"{key}_turns"] = float(len(v))
            print(
                f"{mode}: end of user speech → first answer sample in the room, think time "
                f"{THINK_S * 1000:.0f} ms subtracted: p50 {out[f'{key}_p50_ms']:.0f} ms, p95 "
                f"{out[f'{key}_p95_ms']:.0f} ms over {len(v)} turns "
                f"({', '.join(f'{x:.0f}' for x in v)})"
            )
            if parts:  # where the time went
                for name in Parts.__dataclass_fields__:
                    xs = [getattr(p, name) for p in parts]
                    print(
                        f"    {name:9} p50 {np.nanmedian(xs):4.0f} ms, max {np.nanmax(xs):4.0f} ms "
                        f"({', '.join(f'{x:.0f}' for x in xs)})"
                    )
    print("targets: push-to-talk ≤ 60 ms, hands-free ≤ 450 ms (including endpointing)")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else TURNS, *sys.argv[2:3])
